"""The Azure stack: Blob Storage, the Azure ML registry and jobs, Azure Monitor, Functions.

Built from the stack outputs alone (`contract.outputs.AZURE`, exported by infra/azure/).
"""
