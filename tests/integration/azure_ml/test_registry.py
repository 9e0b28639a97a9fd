"""AzureMLModelRegistry against the Azure ML fake: versions assigned by Azure ML, Tandem's
states on tags and Azure ML's archive, the store's side record, races between callers.
(The state machine itself is the conformance suite's test, run here on this registry.)
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from ml.clouds.azure.arm import ml_client
from ml.clouds.azure.common import AzureOutputs, PlaceholderCredential
from ml.clouds.azure.registry import AzureMLModelRegistry
from ml.clouds.base import APPROVED, ARCHIVED, PENDING
from ml.clouds.local import DirectoryStore, FileLocks
from ml.clouds.locks import model_lock
from ml.errors import NotFoundError, TandemError
from tests.azure_fakes import AzureFake
from tests.contract import test_registry as conformance

BLOB = "https://tandemdevst.blob.core.windows.net/tandem-models/artifacts/credit"
MODEL_PATHS = "/models/{name}/versions"


@pytest.fixture
def registry(cfg: AzureOutputs, store: DirectoryStore, locks: FileLocks) -> AzureMLModelRegistry:
    return AzureMLModelRegistry(ml_client(cfg, PlaceholderCredential()), store, locks)


def test_versions_are_assigned_by_azure_ml_and_point_at_the_blob_uri(
    registry: AzureMLModelRegistry, fake: AzureFake, store: DirectoryStore
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
    registry: AzureMLModelRegistry, store: DirectoryStore
) -> None:
    registry.create_version("credit", f"{BLOB}/a", {"roc_auc": 0.9}, {"run_id": "a"})
    registry.set_status("credit", 1, APPROVED, "gates passed")
    store.put_bytes("registry/credit/v1.json", b"")  # an unreadable record...
    for key in store.list_keys("registry/"):
        (store.root / key).unlink()  # ...then none at all
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


CALLERS = 6


def test_concurrent_registrations_get_distinct_consecutive_versions(
    cfg: AzureOutputs, tmp_path: Path
) -> None:
    """Each caller has its own connection (MLClient, store, locks), as separate CI jobs do."""
    start = threading.Barrier(CALLERS)
    results: dict[int, object] = {}

    def caller(index: int) -> None:
        store = DirectoryStore(tmp_path / "store")
        locks = FileLocks(tmp_path / "locks")
        registry = AzureMLModelRegistry(ml_client(cfg, PlaceholderCredential()), store, locks)
        start.wait(60)
        try:
            if index % 2:  # as lifecycle.register calls it: under the model's lock, re-entered
                with locks.hold(model_lock("credit")):
                    results[index] = registry.create_version(
                        "credit", f"{BLOB}/run-{index}", {}, {}
                    )
            else:  # a caller that holds nothing: the registry takes the lock itself
                results[index] = registry.create_version("credit", f"{BLOB}/run-{index}", {}, {})
        except Exception as exc:  # reported below
            results[index] = exc

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    failed = {i: r for i, r in results.items() if isinstance(r, Exception)}
    assert not failed, failed
    versions = {i: r.version for i, r in results.items()}
    assert sorted(versions.values()) == list(range(1, CALLERS + 1)), versions
    store = DirectoryStore(tmp_path / "store")
    registry = AzureMLModelRegistry(
        ml_client(cfg, PlaceholderCredential()), store, FileLocks(tmp_path / "locks")
    )
    stored = {v.version: v.artifact_uri for v in registry.list_versions("credit")}
    assert stored == {v: f"{BLOB}/run-{i}" for i, v in versions.items()}
