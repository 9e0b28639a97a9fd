"""The Azure stack: Blob Storage, the Azure ML registry and jobs, Azure Monitor, Functions.

Built from the stack outputs alone (`contract.outputs.AZURE`, exported by infra/azure/); the
emulator overrides `endpoint_url` (Azurite) and `management_url` (a fake of everything else)
are added by hand, never exported. One module per job:

- store.py: the artifact store over the stack's blob containers (verified, the manifest last
  and only if absent, one writer per artifact by a claim lease); locks.py: locks as blob
  leases under `locks/`.
- registry.py: Azure ML's model registry (Azure ML numbers versions; Tandem's states on tags,
  archive is Azure ML's archive); the model is registered by the blob URI the store verified.
- jobs.py: `ml/train.py` as an Azure ML command job on the stack's compute cluster.
- metrics.py: Azure Monitor custom metrics on the stack's metrics resource.
- endpoint.py: one Flex Consumption function app per model; a deploy writes its settings
  through ARM (read-modify-write) and what is live is read back from the app.
- secrets.py: the pseudonymisation key in Key Vault.
- arm.py: the Azure ML and ARM clients, pointed at Azure or at the emulator.

Credentials: `DefaultAzureCredential` (managed identity, `az login`, GitHub OIDC).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ml.clouds.azure.arm import ArmRest, ml_client
from ml.clouds.azure.common import AzureOutputs, credential, quiet_sdk_chatter
from ml.clouds.azure.endpoint import FunctionAppEndpoint
from ml.clouds.azure.jobs import AzureMLJobRunner
from ml.clouds.azure.locks import BlobLocks
from ml.clouds.azure.metrics import AzureMonitorMetricsSink
from ml.clouds.azure.registry import AzureMLModelRegistry
from ml.clouds.azure.secrets import pseudonym_key
from ml.clouds.azure.store import BlobArtifactStore, blob_service
from ml.clouds.base import Stack

__all__ = [
    "AzureMLJobRunner",
    "AzureMLModelRegistry",
    "AzureMonitorMetricsSink",
    "AzureOutputs",
    "BlobArtifactStore",
    "BlobLocks",
    "FunctionAppEndpoint",
    "connect",
]


def connect(outputs: Mapping[str, Any]) -> Stack:
    """The Azure Stack of one environment, from its stack outputs alone."""
    cfg = AzureOutputs.parse(outputs)
    quiet_sdk_chatter()
    cred = credential(cfg)
    store = BlobArtifactStore(blob_service(cfg), cfg.containers)
    locks = BlobLocks(store)
    client = ml_client(cfg, cred)
    return Stack(
        cloud="azure",
        name=cfg.stack,
        store=store,
        registry=AzureMLModelRegistry(client, store, locks),
        metrics=AzureMonitorMetricsSink(cfg, cred),
        jobs=AzureMLJobRunner(client, ArmRest(cfg, cred), store, cfg),
        endpoint=FunctionAppEndpoint(cfg, cred, store, locks),
        locks=locks,
        outputs=dict(outputs),
        tracking_uri=cfg.mlflow_tracking_uri,
        pseudonym_key=pseudonym_key(cfg, cred),
    )
