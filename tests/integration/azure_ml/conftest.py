"""Fixtures for the Azure ML, Azure Monitor, ARM and Key Vault parts of the Azure adapter:
the HTTPS fake of those services (tests/azure_fakes.py) on a loopback port, trusted through
REQUESTS_CA_BUNDLE, stack outputs that point the adapter at it, and a store and locks.

The store is the local one (ml/clouds/local.py) wherever a test only needs objects stored and
read back: the fake reads and writes through it (`StoreBlobs`), as it would through the Blob
store on Azurite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract.outputs import MANAGEMENT_URL
from ml.clouds.azure.common import AzureOutputs, PlaceholderCredential
from ml.clouds.local import DirectoryStore, FileLocks
from tests.azure_fakes import AzureFake, StoreBlobs

SUBSCRIPTION = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
RESOURCE_GROUP = "tandem-dev-rg"
WORKSPACE = "tandem-dev-mlw"
COMPUTE = "tandem-dev-cpu"
ENVIRONMENT = "azureml:tandem-training:3"
LOCATION = "westeurope"
MODELS = ("credit", "churn")
METRICS_RESOURCE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
    "Microsoft.Insights/components/tandem-dev-appi"
)


def app_name(model: str) -> str:
    return f"tandem-dev-{model}-func"


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "store")


@pytest.fixture
def locks(tmp_path: Path) -> FileLocks:
    return FileLocks(tmp_path / "locks")


@pytest.fixture
def fake(
    store: DirectoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AzureFake]:
    made = AzureFake(
        subscription_id=SUBSCRIPTION,
        resource_group=RESOURCE_GROUP,
        workspace=WORKSPACE,
        blobs=StoreBlobs(store),
        environments=(ENVIRONMENT,),
        computes=(COMPUTE,),
        workdir=tmp_path / "fake",
    )
    with made:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(made.ca_bundle))
        for model in MODELS:
            made.register_function_app(app_name(model), {"FUNCTIONS_WORKER_RUNTIME": "python"})
        yield made


def stack_outputs(fake: AzureFake, **overrides: Any) -> dict[str, Any]:
    """What infra/azure exports for a dev stack, plus the emulator override."""
    outputs = {
        "cloud": "azure",
        "stack": "dev",
        "location": LOCATION,
        "name_prefix": "tandem-dev",
        "subscription_id": SUBSCRIPTION,
        "resource_group": RESOURCE_GROUP,
        "storage_account_url": "https://tandemdevst.blob.core.windows.net",
        "containers": {r: f"tandem-{r}" for r in ("data", "models", "captures", "reports")},
        "workspace_name": WORKSPACE,
        "compute_name": COMPUTE,
        "training_identity_client_id": "6f2d1c9e-0d53-4b8e-9d3b-1a2b3c4d5e6f",
        "training_environment": ENVIRONMENT,
        "endpoints": {
            m: {"function_app": app_name(m), "url": f"{fake.url}/functions/{app_name(m)}"}
            for m in MODELS
        },
        "metrics_resource_id": METRICS_RESOURCE,
        "metric_namespace": "Tandem",
        "key_vault_url": "https://tandem-dev-kv.vault.azure.net/",
        "pseudonym_secret_name": "tandem-pseudonym-key",
        MANAGEMENT_URL: fake.url,
    }
    return outputs | overrides


@pytest.fixture
def cfg(fake: AzureFake) -> AzureOutputs:
    return AzureOutputs.parse(stack_outputs(fake))


@pytest.fixture
def cred() -> PlaceholderCredential:
    return PlaceholderCredential()
