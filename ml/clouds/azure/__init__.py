"""The Azure stack: Blob Storage, the Azure ML registry and jobs, Azure Monitor, Functions.

Built from the stack outputs alone (`contract.outputs.AZURE`, exported by infra/azure/).
"""

from typing import Any

from ml.errors import ConfigError


def connect(outputs: dict[str, Any]):
    """Until the adapter's pieces land, `--cloud azure` says so instead of half-working."""
    raise ConfigError("the azure adapter is not part of this release yet")
