"""The embedded local stack: its outputs, its directory layout, and what only a directory can get
wrong (paths outside the store, staging directories, file names as numbers, threads sharing
files). What every stack guarantees is in tests/contract/."""

from __future__ import annotations

import json
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
    ArtifactStore,
    EndpointTarget,
    JobRunner,
    MetricPoint,
    MetricsSink,
    ModelRegistry,
    Stack,
)
from ml.clouds.local import DirectoryStore, FileLocks, FileRegistry, stack_outputs
from ml.errors import (
    ArtifactIntegrityError,
    ConfigError,
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
    with pytest.raises(ConfigError, match=r"lack \['cloud', 'root'\]"):
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


def test_pending_cannot_be_archived(local_stack: Stack) -> None:
    _register(local_stack.registry)
    with pytest.raises(InvalidTransitionError, match="allowed: \\['approved', 'rejected'\\]"):
        local_stack.registry.set_status("credit", 1, ARCHIVED)


def test_metrics_sink_appends(local_stack: Stack) -> None:
    local_stack.metrics.emit([MetricPoint("psi", 0.3, {"Model": "credit"})])
    local_stack.metrics.emit([])
    local_stack.metrics.emit([MetricPoint("psi", 0.1), MetricPoint("rows", 10, unit="Count")])
    points = local_stack.metrics.read()
    assert [(p.name, p.value) for p in points] == [("psi", 0.3), ("psi", 0.1), ("rows", 10)]
    assert points[0].dimensions == {"Model": "credit"}
    assert all(p.timestamp for p in points)


def local_registry(root: Path) -> FileRegistry:
    return FileRegistry(DirectoryStore(root / "store"), FileLocks(root / "locks"))


def test_concurrent_threads_get_distinct_consecutive_versions(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    barrier = threading.Barrier(WORKERS)

    def register(_: int) -> int:
        registry = local_registry(root)  # each thread its own client, as separate callers are
        barrier.wait(timeout=60)
        return registry.create_version("credit", "file:///artifact", {}, {}).version

    with ThreadPoolExecutor(WORKERS) as pool:
        versions = sorted(pool.map(register, range(WORKERS)))
    assert versions == list(range(1, WORKERS + 1))
    assert len(local_registry(root).list_versions("credit")) == WORKERS


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
    state = json.loads(local_stack.endpoint.state_path("credit").read_text())
    assert state == {
        "model": "credit",
        "live": {"version": 1, "path": str(installed.resolve())},
        "canary": None,
    }
    second = local_stack.registry.create_version("credit", uri + "/", {}, {"run": "2"})
    second = local_stack.registry.set_status("credit", second.version, APPROVED)
    canary = local_stack.endpoint.deploy(second, canary_weight=0.1)
    assert (canary.canary_weight, canary.details["primary_model_version"]) == (0.1, "1")
    assert [d.canary_weight for d in local_stack.endpoint.history("credit")] == [None, 0.1]
    state = json.loads(local_stack.endpoint.state_path("credit").read_text())
    assert state["live"]["version"] == 1
    assert (state["canary"]["version"], state["canary"]["weight"]) == (2, 0.1)


def test_files_of_an_interrupted_upload_are_never_listed(
    local_stack: Stack, trained_artifact: Path
) -> None:
    store = local_stack.store
    store.put_artifact(trained_artifact, "artifacts/credit/run-1")
    # what a crash mid-upload leaves: a hidden staging sibling, partly filled
    staging = store.root / "artifacts" / "credit" / ".run-2.k3j9x1"
    staging.mkdir()
    (staging / artifact.ONNX).write_bytes(b"half a model")
    (store.root / "artifacts" / "credit" / ".run-3.partial").write_bytes(b"half a file")
    assert store.list_keys("artifacts/") == sorted(
        f"artifacts/credit/run-1/{name}"
        for name in (*artifact.CONTENT, artifact.MANIFEST, artifact.TARBALL)
    )
    assert store.list_keys("artifacts/credit/.run-2.k3j9x1/") == []


def test_version_numbers_are_numbers_past_six_digits(local_stack: Stack) -> None:
    registry = local_stack.registry
    first = registry.create_version("credit", "file:///a/first", {}, {})
    records = local_stack.store.root / "registry" / "credit"
    [record] = [p for p in records.iterdir() if p.suffix == ".json"]
    # the registry at v999999, as it would have written it (numbers are not re-counted)
    payload = json.loads(record.read_text()) | {"version": 999_999, "artifact_uri": "file:///a/x"}
    (record.parent / "v999999.json").write_text(json.dumps(payload))
    after = [registry.create_version("credit", f"file:///a/{i}", {}, {}) for i in range(2)]
    assert [v.version for v in after] == [1_000_000, 1_000_001]
    assert [v.version for v in registry.list_versions("credit")] == [
        first.version,
        999_999,
        1_000_000,
        1_000_001,
    ]
    assert registry.get_version("credit", 1_000_000).artifact_uri == "file:///a/0"
    assert registry.get_version("credit", 1_000_001).artifact_uri == "file:///a/1"
