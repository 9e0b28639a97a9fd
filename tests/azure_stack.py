"""An Azure stack for tests: every output a deployed stack exports, pointed at Azurite.

`outputs(endpoint_url, stack)` is what `pulumi stack output --json` would give for an Azure
stack (every key of `contract.outputs.AZURE`, plausible values), plus `endpoint_url` for the
Blob client. Containers are named `<stack>-<role>`, so stacks with different names share one
Azurite without seeing each other's blobs. `create_containers(outputs)` makes them, as the
Pulumi program would; `service(outputs)` is the adapter's own Blob client for them.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from contract.layout import AZURE_CONTAINERS
from contract.outputs import AZURE, CLOUD, ENDPOINT_URL, MANAGEMENT_URL, STACK
from ml.clouds.azure.common import AzureOutputs
from ml.clouds.azure.store import BlobArtifactStore, blob_service

if TYPE_CHECKING:
    from tests.azure_fakes import AzureFake

MODELS = ("credit", "churn")  # the models the test stacks have function apps for
LOCATION = "westeurope"


def outputs(endpoint_url: str, stack: str = "dev", **overrides: Any) -> dict[str, Any]:
    """The stack outputs of an Azure stack named `stack` whose Blob endpoint is Azurite at
    `endpoint_url`. `overrides` replace outputs (None removes one)."""
    prefix = f"tandem-{stack}"
    subscription = str(uuid.uuid5(uuid.NAMESPACE_URL, f"tandem-tests/{stack}"))
    group = f"{prefix}-rg"
    group_id = f"/subscriptions/{subscription}/resourceGroups/{group}"
    account = f"tandem{stack.replace('-', '')}"[:18] + "st01"
    workspace = f"{prefix}-mlw"
    apps = {model: f"{prefix}-{model}-fn" for model in MODELS}
    values: dict[str, Any] = {
        CLOUD: AZURE.cloud,
        STACK: stack,
        "location": LOCATION,
        "name_prefix": prefix,
        "subscription_id": subscription,
        "resource_group": group,
        "storage_account_url": f"https://{account}.blob.core.windows.net",
        "containers": {role: f"{stack}-{role}" for role in AZURE_CONTAINERS},
        "workspace_name": workspace,
        "compute_name": "train-cpu",
        "training_identity_client_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{stack}/training")),
        "training_environment": "azureml:tandem-training:1",
        "endpoints": {
            model: {"function_app": app, "url": f"https://{app}.azurewebsites.net"}
            for model, app in apps.items()
        },
        "metrics_resource_id": (
            f"{group_id}/providers/Microsoft.Insights/components/{prefix}-appi"
        ),
        "metric_namespace": "Tandem",
        "key_vault_url": f"https://{account[:20]}kv.vault.azure.net/",
        "pseudonym_secret_name": "tandem-pseudonym-key",
        "mlflow_tracking_uri": (
            f"azureml://{LOCATION}.api.azureml.ms/mlflow/v1.0{group_id}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
        ),
        "tenant_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "tandem-tests/tenant")),
        "storage_account_name": account,
        "key_vault_name": f"{account[:20]}kv",
        "log_analytics_workspace_id": (
            f"{group_id}/providers/Microsoft.OperationalInsights/workspaces/{prefix}-log"
        ),
        "application_insights_name": f"{prefix}-appi",
        "container_registry_login_server": f"{account}acr.azurecr.io",
        "action_group_id": f"{group_id}/providers/Microsoft.Insights/actionGroups/{prefix}-ag",
        "alert_names": [f"{prefix}-{model}-failures" for model in MODELS],
        "function_identity_client_ids": {
            model: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{stack}/{model}")) for model in MODELS
        },
        "ci_identity_client_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{stack}/ci")),
        "functions_package_container": {model: f"{stack}-{model}-package" for model in MODELS},
        ENDPOINT_URL: endpoint_url,
    }
    assert set(AZURE.exported) <= set(values), set(AZURE.exported) - set(values)
    for key, value in overrides.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return values


def service(stack_outputs: dict[str, Any], **options: Any) -> BlobServiceClient:
    """The adapter's Blob client for the stack (`options` go to the SDK client)."""
    return blob_service(AzureOutputs.parse(stack_outputs), **options)


def create_containers(stack_outputs: dict[str, Any]) -> None:
    """Create the stack's containers (those that exist already are left as they are)."""
    blobs = service(stack_outputs)
    for name in AzureOutputs.parse(stack_outputs).containers.values():
        with contextlib.suppress(ResourceExistsError):
            blobs.create_container(name)


@contextlib.contextmanager
def emulated(
    endpoint_url: str, stack: str, workdir: Path, *, run: str | None = None
) -> Iterator[tuple[dict[str, Any], AzureFake]]:
    """A whole Azure stack offline, as `(outputs, fake)`: Blob on the Azurite at
    `endpoint_url` (containers `t<run>-<stack>-<role>`, so tests sharing one Azurite never
    meet), every other service the HTTPS fake (tests/azure_fakes.py), which plays training
    jobs and runs each model's function app. The outputs are all a user would have (plus the
    two emulator addresses); the caller trusts the fake: REQUESTS_CA_BUNDLE=fake.ca_bundle."""
    from tests.azure_fakes import AzureFake, StoreBlobs

    run = run or uuid.uuid4().hex[:8]
    base = outputs(
        endpoint_url,
        stack=stack,
        containers={role: f"t{run}-{stack}-{role}"[:63] for role in AZURE_CONTAINERS},
        mlflow_tracking_uri=None,  # an azureml:// URI needs Azure ML's MLflow plugin
    )
    create_containers(base)
    cfg = AzureOutputs.parse(base)
    # what Azure ML and the function apps read and write: the stack's storage account
    store = BlobArtifactStore(blob_service(cfg), cfg.containers)
    fake = AzureFake(
        subscription_id=cfg.subscription_id,
        resource_group=cfg.resource_group,
        workspace=cfg.workspace_name,
        blobs=StoreBlobs(store),
        environments=(cfg.training_environment,),
        computes=(cfg.compute_name,),
        workdir=workdir,
    )
    with fake:
        endpoints = {}
        for model, app in cfg.endpoints.items():
            url = fake.register_function_app(app.function_app)
            endpoints[model] = {"function_app": app.function_app, "url": url}
        yield base | {"endpoints": endpoints, MANAGEMENT_URL: fake.url}, fake
