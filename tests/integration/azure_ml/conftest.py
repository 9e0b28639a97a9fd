"""Fixtures for the Azure ML, Azure Monitor, ARM and Key Vault parts of the Azure adapter.

Each test gets a stack of its own (tests/azure_stack.py outputs, a fresh stack name, so its
containers are its own) whose Blob store is Azurite and whose every other service is the HTTPS
fake (tests/azure_fakes.py) on a loopback port, trusted through REQUESTS_CA_BUNDLE. The fake
reads and writes blobs through the stack's own store (`StoreBlobs`), as Azure ML and the
function apps would read and write the stack's storage account.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract.outputs import MANAGEMENT_URL
from ml.clouds import connect
from ml.clouds.azure.common import AzureOutputs
from ml.clouds.azure.locks import BlobLocks
from ml.clouds.azure.store import BlobArtifactStore, blob_service
from ml.clouds.base import Stack
from tests import azure_stack
from tests.azure_fakes import AzureFake, StoreBlobs


@pytest.fixture
def base_outputs(azurite: str) -> dict[str, Any]:
    """A fresh stack's outputs on Azurite, its containers created."""
    made = azure_stack.outputs(azurite, stack=f"t{uuid.uuid4().hex[:12]}")
    azure_stack.create_containers(made)
    return made


@pytest.fixture
def store(base_outputs: dict[str, Any]) -> BlobArtifactStore:
    cfg = AzureOutputs.parse(base_outputs)
    return BlobArtifactStore(blob_service(cfg), cfg.containers)


@pytest.fixture
def locks(store: BlobArtifactStore) -> BlobLocks:
    return BlobLocks(store, lease_seconds=15, poll_seconds=0.05)


@pytest.fixture
def fake(
    base_outputs: dict[str, Any],
    store: BlobArtifactStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[AzureFake]:
    made = AzureFake(
        subscription_id=base_outputs["subscription_id"],
        resource_group=base_outputs["resource_group"],
        workspace=base_outputs["workspace_name"],
        blobs=StoreBlobs(store),
        environments=(base_outputs["training_environment"],),
        computes=(base_outputs["compute_name"],),
        workdir=tmp_path / "fake",
    )
    with made:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(made.ca_bundle))
        yield made


@pytest.fixture
def outputs(base_outputs: dict[str, Any], fake: AzureFake) -> dict[str, Any]:
    """The stack's outputs with every service but Blob at the fake: its function apps are
    registered there (with Pulumi's one setting) and their URLs are the fake's."""
    endpoints = {
        model: {
            "function_app": entry["function_app"],
            "url": fake.register_function_app(
                entry["function_app"], {"FUNCTIONS_WORKER_RUNTIME": "python"}
            ),
        }
        for model, entry in base_outputs["endpoints"].items()
    }
    return base_outputs | {"endpoints": endpoints, MANAGEMENT_URL: fake.url}


@pytest.fixture
def cfg(outputs: dict[str, Any]) -> AzureOutputs:
    return AzureOutputs.parse(outputs)


def app_name(cfg: AzureOutputs, model: str = "credit") -> str:
    return cfg.endpoints[model].function_app


def stack_of(outputs: dict[str, Any], **jobs_options: Any) -> Stack:
    """The Azure stack built from its outputs alone (`connect`): a connection of its own
    (clients, store, locks), as each CI job or user has. Locks poll often; `jobs_options`
    (poll_seconds, sleep) tune the job runner."""
    stack = connect("azure", outputs)
    stack.locks.poll_seconds = 0.05
    for name, value in jobs_options.items():
        setattr(stack.jobs, name, value)
    return stack
