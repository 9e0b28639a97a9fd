"""The Azure Functions app over the inference core: `function_app.py` (Python v2 programming
model), `host.json` and `requirements.txt`, packaged by `deploy.bundle.build_azure_zip`."""
