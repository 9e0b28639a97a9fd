"""AzureMLModelRegistry against the Azure ML fake: versions assigned by Azure ML, Tandem's
states on tags and Azure ML's archive, the store's side record, races between callers.
(The state machine itself is the conformance suite's test, run here on this registry.)
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from ml.clouds.azure.arm import ml_client
from ml.clouds.azure.common import AzureOutputs, PlaceholderCredential
from ml.clouds.azure.locks import BlobLocks
from ml.clouds.azure.registry import AzureMLModelRegistry
from ml.clouds.azure.store import BlobArtifactStore
from ml.clouds.base import APPROVED, ARCHIVED, PENDING, ModelVersion
from ml.errors import NotFoundError, TandemError
from tests.azure_fakes import AzureFake
from tests.contract import test_concurrency
from tests.contract import test_registry as conformance
from tests.integration.azure_ml.conftest import stack_of

BLOB = "https://tandemdevst.blob.core.windows.net/tandem-models/artifacts/credit"
MODEL_PATHS = "/models/{name}/versions"


@pytest.fixture
def registry(cfg: AzureOutputs, store: BlobArtifactStore, locks: BlobLocks) -> AzureMLModelRegistry:
    return AzureMLModelRegistry(ml_client(cfg, PlaceholderCredential()), store, locks)


def test_versions_are_assigned_by_azure_ml_and_point_at_the_blob_uri(
    registry: AzureMLModelRegistry, fake: AzureFake, store: BlobArtifactStore
) -> None:
    created = [
        registry.create_version("credit", f"{BLOB}/run-{i}/", {"roc_auc": 0.8 + i / 100},
                                {"run_id": f"run-{i}", "data_hash": "sha256:ab"})
        for i in range(3)
    ]  # fmt: skip
    assert [v.version for v in created] == [1, 2, 3]
    assert {v.status for v in created} == {PENDING}
    held = fake.model_versions("credit")
    assert sorted(held) == ["1", "2", "3"]
    second = held["2"]["properties"]
    assert second["modelUri"] == f"{BLOB}/run-1"  # the store's URI; nothing uploaded
    assert second["modelType"] == "custom_model"
    assert second["tags"] == {
        "run_id": "run-1",
        "data_hash": "sha256:ab",
        "tandem.status": "pending",
    }
    assert second["properties"]["tandem.metric.roc_auc"] == "0.81"
    record = json.loads(store.get_bytes("registry/credit/v2.json"))
    assert (record["artifact_uri"], record["metrics"]) == (f"{BLOB}/run-1", {"roc_auc": 0.81})
    assert registry.get_version("credit", 2) == created[1]
    assert registry.list_versions("credit") == created
    assert registry.list_models() == ["credit"]
    # only model versions were touched: no datastore, no upload
    assert {template.split("/workspaces/{workspace}")[-1] for _, template in fake.operations()} <= {
        "/models/{name}/versions", "/models/{name}", "/models/{name}/versions/{version}", "/models",
    }  # fmt: skip
    assert fake.unanswered() == []


def test_states_live_on_tags_and_archive_uses_azure_mls_archive(
    registry: AzureMLModelRegistry, fake: AzureFake
) -> None:
    for run in ("a", "b"):
        registry.create_version("credit", f"{BLOB}/{run}", {}, {})
    registry.set_status("credit", 1, APPROVED, "gates passed")
    approved = fake.model_versions("credit")["1"]["properties"]
    assert approved["tags"]["tandem.status"] == "approved"
    assert approved["tags"]["tandem.status_reason"] == "gates passed"
    assert approved["isArchived"] is False
    archived = registry.set_status("credit", 1, ARCHIVED, "rolled back")
    held = fake.model_versions("credit")["1"]["properties"]
    assert (held["tags"]["tandem.status"], held["isArchived"]) == ("archived", True)
    assert held["modelUri"] == f"{BLOB}/a"  # a status change never moves the artifact
    # archived versions leave Azure ML's default lists and stay in Tandem's
    assert [v.version for v in registry.list_versions("credit")] == [1, 2]
    assert registry.get_version("credit", 1) == archived
    assert (archived.status, archived.status_reason) == (ARCHIVED, "rolled back")


def test_the_one_state_machine(registry: AzureMLModelRegistry) -> None:
    stack = SimpleNamespace(registry=registry)
    conformance.test_every_status_change_follows_the_one_state_machine(stack, f"{BLOB}/run-1")
    conformance.test_an_unknown_status_is_refused(stack, f"{BLOB}/run-1")


def test_unknown_models_and_versions(registry: AzureMLModelRegistry) -> None:
    assert registry.list_versions("credit") == []
    assert registry.list_models() == []
    with pytest.raises(NotFoundError, match="no version 1"):
        registry.get_version("credit", 1)
    conformance.test_status_of_a_version_that_does_not_exist(SimpleNamespace(registry=registry))


def test_a_local_path_is_refused_before_azure_ml_could_upload_it(
    registry: AzureMLModelRegistry, fake: AzureFake, tmp_path: Path
) -> None:
    with pytest.raises(TandemError, match="by the Blob URI"):
        registry.create_version("credit", tmp_path.as_uri(), {}, {})
    assert fake.operations() == []


def test_azure_mls_status_wins_when_its_update_failed_after_the_record(
    registry: AzureMLModelRegistry, fake: AzureFake
) -> None:
    registry.create_version("credit", f"{BLOB}/a", {}, {})
    fake.fail("PUT", "/models/credit/versions/1", 403, "AuthorizationFailed", "not allowed")
    with pytest.raises(TandemError, match="AuthorizationFailed"):
        registry.set_status("credit", 1, APPROVED, "gates passed")
    assert registry.get_version("credit", 1).status == PENDING


def test_a_version_written_outside_tandem_reads_from_azure_ml_alone(
    registry: AzureMLModelRegistry, store: BlobArtifactStore
) -> None:
    registry.create_version("credit", f"{BLOB}/a", {"roc_auc": 0.9}, {"run_id": "a"})
    registry.set_status("credit", 1, APPROVED, "gates passed")
    for key in store.list_keys("registry/"):
        store.blob_client(key).delete_blob()  # the record is gone
    got = registry.get_version("credit", 1)
    assert (got.artifact_uri, got.metrics, got.tags) == (
        f"{BLOB}/a",
        {"roc_auc": 0.9},
        {"run_id": "a"},
    )
    assert (got.status, got.status_reason) == (APPROVED, "gates passed")


def test_azure_ml_keeps_a_versions_artifact_whoever_races_for_its_number(
    cfg: AzureOutputs,
) -> None:
    """What Azure ML guarantees on its own: a second PUT of a number with another artifact
    is refused, never an overwrite (Tandem's lock keeps its own callers from getting here)."""
    from azure.ai.ml.entities import Model

    client = ml_client(cfg, PlaceholderCredential())
    client.models.create_or_update(Model(name="credit", version="1", path=f"{BLOB}/a"))
    with pytest.raises(Exception, match="Asset paths cannot be updated"):
        client.models.create_or_update(Model(name="credit", version="1", path=f"{BLOB}/b"))
    assert client.models.get("credit", "1").path == f"{BLOB}/a"


def test_concurrent_registrations_get_distinct_consecutive_versions(
    outputs: dict, trained_artifact: Path, tmp_path: Path
) -> None:
    """The conformance suite's race, through lifecycle.register: callers with connections of
    their own (MLClient, store, locks), released together."""
    stack = stack_of(outputs)
    callers = test_concurrency.CALLERS
    uris = []
    for i in range(callers):
        local = tmp_path / f"artifact-{i}"
        shutil.copytree(trained_artifact, local)
        uris.append(stack.store.put_artifact(local, f"artifacts/credit/run-{i}"))
    start = threading.Barrier(callers)
    results: dict[int, object] = {}

    def caller(index: int) -> None:
        own = stack_of(outputs)
        start.wait(60)
        try:
            if index % 2:  # as the lifecycle registers: under the model's lock
                results[index] = test_concurrency.register(own, index, 0, uris)
            else:  # a caller that holds nothing: the registry's own lock serialises
                made = own.registry.create_version("credit", uris[index], {}, {})
                results[index] = made.version
        except Exception as exc:  # reported below
            results[index] = exc

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    failed = {i: r for i, r in results.items() if not isinstance(r, int)}
    assert not failed, failed
    assert sorted(results.values()) == list(range(1, callers + 1))
    stored = stack.registry.list_versions("credit")
    assert all(isinstance(v, ModelVersion) for v in stored)
    assert {v.version: v.artifact_uri for v in stored} == {
        version: uris[i] for i, version in results.items()
    }
