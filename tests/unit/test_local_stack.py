"""The embedded local stack: store, registry state machine, and a counter safe under concurrency."""

from __future__ import annotations

import json
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ml import artifact
from ml.clouds import connect
from ml.clouds.base import (
    APPROVED,
    ARCHIVED,
    PENDING,
    REJECTED,
    ArtifactStore,
    EndpointTarget,
    JobRunner,
    MetricPoint,
    MetricsSink,
    ModelRegistry,
    Stack,
)
from ml.clouds.local import FileRegistry, stack_outputs
from ml.errors import (
    ArtifactIntegrityError,
    ConfigError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
)

WORKERS = 8


def test_stack_outputs_and_connect(tandem_home: Path) -> None:
    outputs = stack_outputs("dev", tandem_home)
    assert outputs == {
        "cloud": "local",
        "stack": "dev",
        "root": str((tandem_home / "dev").resolve()),
    }
    assert json.loads((tandem_home / "dev" / "outputs.json").read_text()) == outputs
    assert stack_outputs("dev", tandem_home) == outputs  # idempotent
    stack = connect("local", outputs)
    assert (stack.cloud, stack.name) == ("local", "dev")
    assert isinstance(stack.store, ArtifactStore)
    assert isinstance(stack.registry, ModelRegistry)
    assert isinstance(stack.metrics, MetricsSink)
    assert isinstance(stack.jobs, JobRunner)
    assert isinstance(stack.endpoint, EndpointTarget)


def test_stack_outputs_default_to_tandem_home(tandem_home: Path) -> None:
    assert stack_outputs("qa")["root"] == str((tandem_home / "qa").resolve())


def test_connect_errors() -> None:
    with pytest.raises(ConfigError, match="unknown cloud 'gcp'"):
        connect("gcp", {})
    with pytest.raises(ConfigError, match="lack 'root'"):
        connect("local", {"stack": "dev"})


def test_store_put_get_list(local_stack: Stack) -> None:
    store = local_stack.store
    uri = store.put_bytes("runs/credit/a.json", b'{"a": 1}')
    store.put_bytes("runs/credit/b.json", b"{}")
    store.put_bytes("reports/x.html", b"<html/>")
    assert uri.startswith("file://") and uri == store.uri_for("runs/credit/a.json")
    assert store.get_bytes("runs/credit/a.json") == b'{"a": 1}'
    assert store.get_bytes(uri) == b'{"a": 1}'
    assert store.list_keys("runs/") == ["runs/credit/a.json", "runs/credit/b.json"]
    assert store.list_keys("") == ["reports/x.html", "runs/credit/a.json", "runs/credit/b.json"]
    assert store.list_keys("nothing/") == []
    store.put_bytes("runs/credit/a.json", b"second")  # last write wins
    assert store.get_bytes("runs/credit/a.json") == b"second"
    with pytest.raises(NotFoundError, match="no such object"):
        store.get_bytes("runs/credit/c.json")


def test_store_refuses_paths_outside_itself(local_stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("x")
    with pytest.raises(NotFoundError, match="outside this store"):
        local_stack.store.get_bytes("../../../secret.txt")
    with pytest.raises(NotFoundError, match="outside this store"):
        local_stack.store.get_bytes((tmp_path / "secret.txt").as_uri())


def test_put_artifact_is_idempotent(
    local_stack: Stack, trained_artifact: Path, tmp_path: Path
) -> None:
    store = local_stack.store
    uri = store.put_artifact(trained_artifact, "artifacts/credit/run-1")
    assert store.put_artifact(trained_artifact, "artifacts/credit/run-1") == uri
    fetched = store.get_artifact(uri, tmp_path / "fetched")
    for name in (*artifact.CONTENT, artifact.MANIFEST, artifact.TARBALL):
        assert (fetched / name).read_bytes() == (trained_artifact / name).read_bytes()
    assert artifact.load(fetched).card["run_id"] == "session-run"
    # no staging directories are left behind
    assert [p.name for p in (store.root / "artifacts" / "credit").iterdir()] == ["run-1"]


def test_put_artifact_conflict_on_different_content(
    local_stack: Stack, trained_artifact: Path, artifact_copy: Path
) -> None:
    store = local_stack.store
    store.put_artifact(trained_artifact, "artifacts/credit/run-1")
    card = json.loads((artifact_copy / artifact.CARD).read_text())
    card["run_id"] = "a-different-run"
    artifact.write_json(artifact_copy / artifact.CARD, card)
    artifact.seal(artifact_copy)
    with pytest.raises(ConflictError, match="artifacts/credit/run-1"):
        store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    assert store.put_artifact(artifact_copy, "artifacts/credit/run-2")  # elsewhere is fine


def test_put_artifact_refuses_a_tampered_source(local_stack: Stack, artifact_copy: Path) -> None:
    (artifact_copy / artifact.BASELINE).write_text("{}")
    with pytest.raises(ArtifactIntegrityError, match=r"baseline\.json"):
        local_stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    assert local_stack.store.list_keys("artifacts/") == []


def test_get_artifact_of_a_tampered_stored_copy_raises(
    local_stack: Stack, trained_artifact: Path, tmp_path: Path
) -> None:
    store = local_stack.store
    uri = store.put_artifact(trained_artifact, "artifacts/credit/run-1")
    stored = store.root / "artifacts" / "credit" / "run-1" / artifact.ONNX
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
        store.get_artifact(uri, tmp_path / "out")
    # and putting the good artifact again does not paper over it
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
        store.put_artifact(trained_artifact, "artifacts/credit/run-1")


def test_get_artifact_absent(local_stack: Stack, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no artifact there"):
        local_stack.store.get_artifact(local_stack.store.uri_for("artifacts/none"), tmp_path)


def _register(registry: FileRegistry, n: int = 1, model: str = "credit") -> list:
    return [
        registry.create_version(model, f"file:///a/{i}", {"roc_auc": 0.8}, {"i": i})
        for i in range(n)
    ]


def test_registry_versions(local_stack: Stack) -> None:
    registry = local_stack.registry
    assert registry.list_versions("credit") == []
    assert registry.list_models() == []
    first, second = _register(registry, 2)
    assert (first.version, second.version) == (1, 2)
    assert first.status == PENDING
    assert first.tags == {"i": "0"}  # tags are strings
    assert registry.get_version("credit", 2) == second
    assert [v.version for v in registry.list_versions("credit")] == [1, 2]
    _register(registry, 1, model="churn")
    assert registry.list_models() == ["churn", "credit"]
    with pytest.raises(NotFoundError, match="no version 3"):
        registry.get_version("credit", 3)


def test_registry_transitions(local_stack: Stack) -> None:
    registry = local_stack.registry
    _register(registry, 2)
    approved = registry.set_status("credit", 1, APPROVED, "gates passed")
    assert (approved.status, approved.status_reason) == (APPROVED, "gates passed")
    assert registry.get_version("credit", 1).status == APPROVED
    archived = registry.set_status("credit", 1, ARCHIVED, "rolled back")
    assert registry.get_version("credit", 1) == archived
    with pytest.raises(InvalidTransitionError, match="cannot go from archived to approved"):
        registry.set_status("credit", 1, APPROVED)

    registry.set_status("credit", 2, REJECTED, "worse than champion")
    with pytest.raises(InvalidTransitionError, match="v2: cannot go from rejected to approved"):
        registry.set_status("credit", 2, APPROVED)
    assert registry.get_version("credit", 2).status == REJECTED
    assert registry.get_version("credit", 2).status_reason == "worse than champion"


def test_pending_cannot_be_archived(local_stack: Stack) -> None:
    _register(local_stack.registry)
    with pytest.raises(InvalidTransitionError, match="allowed: \\['approved', 'rejected'\\]"):
        local_stack.registry.set_status("credit", 1, ARCHIVED)


def test_same_status_is_a_no_op(local_stack: Stack) -> None:
    registry = local_stack.registry
    _register(registry)
    approved = registry.set_status("credit", 1, APPROVED, "first reason")
    again = registry.set_status("credit", 1, APPROVED, "second reason")
    assert again == approved
    assert registry.get_version("credit", 1).status_reason == "first reason"


def test_metrics_sink_appends(local_stack: Stack) -> None:
    local_stack.metrics.emit([MetricPoint("psi", 0.3, {"Model": "credit"})])
    local_stack.metrics.emit([])
    local_stack.metrics.emit([MetricPoint("psi", 0.1), MetricPoint("rows", 10, unit="Count")])
    points = local_stack.metrics.read()
    assert [(p.name, p.value) for p in points] == [("psi", 0.3), ("psi", 0.1), ("rows", 10)]
    assert points[0].dimensions == {"Model": "credit"}
    assert all(p.timestamp for p in points)


def _register_in_child(root: str, barrier, results) -> None:
    registry = FileRegistry(Path(root))
    barrier.wait(timeout=60)
    mv = registry.create_version("credit", "file:///artifact", {"roc_auc": 0.5}, {})
    results.put(mv.version)


def test_concurrent_processes_get_distinct_consecutive_versions(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    root = tmp_path / "registry"
    FileRegistry(root)
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    workers = [
        context.Process(target=_register_in_child, args=(str(root), barrier, results))
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    versions = sorted(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert versions == list(range(1, WORKERS + 1))
    stored = FileRegistry(root).list_versions("credit")
    assert [v.version for v in stored] == list(range(1, WORKERS + 1))


def test_concurrent_threads_get_distinct_consecutive_versions(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    barrier = threading.Barrier(WORKERS)

    def register(_: int) -> int:
        registry = FileRegistry(root)  # each thread its own client, as separate callers are
        barrier.wait(timeout=60)
        return registry.create_version("credit", "file:///artifact", {}, {}).version

    with ThreadPoolExecutor(WORKERS) as pool:
        versions = sorted(pool.map(register, range(WORKERS)))
    assert versions == list(range(1, WORKERS + 1))
    assert len(FileRegistry(root).list_versions("credit")) == WORKERS


def test_concurrent_threads_sharing_one_client(local_stack: Stack) -> None:
    registry = local_stack.registry
    barrier = threading.Barrier(WORKERS)

    def register(_: int) -> int:
        barrier.wait(timeout=60)
        return registry.create_version("credit", "file:///artifact", {}, {}).version

    with ThreadPoolExecutor(WORKERS) as pool:
        versions = sorted(pool.map(register, range(WORKERS)))
    assert versions == list(range(1, WORKERS + 1))


def test_a_tampered_artifact_is_never_installed_even_on_retry(
    local_stack: Stack, trained_artifact: Path
) -> None:
    store = local_stack.store
    uri = store.put_artifact(trained_artifact, "artifacts/credit/run-1")
    version = local_stack.registry.create_version("credit", uri, {}, {})
    version = local_stack.registry.set_status("credit", version.version, APPROVED)
    stored = store.root / "artifacts" / "credit" / "run-1" / artifact.ONNX
    stored.write_bytes(stored.read_bytes() + b"\0")
    for _ in range(2):  # a retried deploy must not trust what the failed one left behind
        with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
            local_stack.endpoint.deploy(version)
    assert local_stack.endpoint.current("credit") is None
    assert local_stack.endpoint.history("credit") == []
    model_root = Path(local_stack.outputs["root"]) / "endpoint" / "credit"
    assert not model_root.exists() or list(model_root.iterdir()) == []


def test_endpoint_deploy_installs_a_verified_copy(
    local_stack: Stack, trained_artifact: Path
) -> None:
    uri = local_stack.store.put_artifact(trained_artifact, "artifacts/credit/run-1")
    version = local_stack.registry.create_version("credit", uri, {}, {})
    version = local_stack.registry.set_status("credit", version.version, APPROVED)
    deployment = local_stack.endpoint.deploy(version)
    assert (deployment.model, deployment.version, deployment.artifact_uri) == ("credit", 1, uri)
    installed = Path(deployment.details["path"])
    assert artifact.verify(installed) == artifact.verify(trained_artifact)
    assert local_stack.endpoint.current("credit") == deployment
    assert local_stack.endpoint.deploy(version) == deployment  # idempotent
    canary = local_stack.endpoint.deploy(version, canary_weight=0.1)
    assert canary.canary_weight == 0.1
    assert [d.canary_weight for d in local_stack.endpoint.history("credit")] == [None, 0.1]
