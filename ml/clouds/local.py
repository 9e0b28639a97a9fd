"""The embedded local stack: a directory that needs no cloud account.

    <root>/outputs.json        the same shape of outputs a Pulumi stack exports
    <root>/store/<key>         artifact store (artifacts/, runs/, reports/, datasets/)
    <root>/registry/<model>/   one JSON file per version, a lock file, a counter
    <root>/metrics.jsonl       metrics sink
    <root>/endpoint/<model>/   deployed artifacts, current.json, history.jsonl

Writers are safe under concurrency: every read-modify-write holds a file lock, and every
file is written to a temporary name and renamed into place (atomic on POSIX).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from filelock import FileLock

from ml import artifact
from ml.clouds.base import (
    Deployment,
    JobResult,
    MetricPoint,
    ModelVersion,
    Progress,
    Stack,
    with_status,
)
from ml.errors import ConfigError, ConflictError, NotFoundError, TandemError

DEFAULT_HOME = ".tandem"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


class DirectoryStore:
    """ArtifactStore over a directory; URIs are file:// URIs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, uri_or_key: str) -> Path:
        if uri_or_key.startswith("file://"):
            path = Path(unquote(urlparse(uri_or_key).path)).resolve()
        else:
            path = (self.root / uri_or_key).resolve()
        if not path.is_relative_to(self.root):
            raise NotFoundError(f"{uri_or_key}: outside this store ({self.root})")
        return path

    def uri_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        write_atomic(path, data)
        return path.as_uri()

    def get_bytes(self, uri_or_key: str) -> bytes:
        path = self._path(uri_or_key)
        if not path.is_file():
            raise NotFoundError(f"{uri_or_key}: no such object")
        return path.read_bytes()

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def put_artifact(self, local_dir: Path, key: str) -> str:
        local_manifest = artifact.verify(local_dir)
        target = self._path(key)
        if (target / artifact.MANIFEST).is_file():
            stored = json.loads((target / artifact.MANIFEST).read_text())["files"]
            if stored != local_manifest:
                raise ConflictError(f"{key}: holds a different artifact already")
            artifact.verify(target)
            return target.as_uri()
        # Copy into a hidden sibling, verify, then rename: the key appears complete or not at all.
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            for name in (*local_manifest, artifact.MANIFEST, artifact.TARBALL):
                source = Path(local_dir) / name
                if source.is_file():
                    shutil.copyfile(source, staging / name)
            artifact.verify(staging)
            os.replace(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if (target / artifact.MANIFEST).is_file():  # a concurrent writer won the race
                return self.put_artifact(local_dir, key)
            raise TandemError(f"{key}: could not store the artifact: {exc}") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target.as_uri()

    def get_artifact(self, uri: str, dest: Path) -> Path:
        source = self._path(uri)
        if not (source / artifact.MANIFEST).is_file():
            raise NotFoundError(f"{uri}: no artifact there")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file():
                shutil.copyfile(path, dest / path.name)
        artifact.verify(dest)
        return dest


class FileRegistry:
    """ModelRegistry in a directory; a file lock per model guards the version counter."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _lock(self, model: str) -> FileLock:
        (self.root / model).mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / model / ".lock", timeout=60)

    def _file(self, model: str, version: int) -> Path:
        return self.root / model / f"v{version:06d}.json"

    def _read(self, path: Path) -> ModelVersion:
        return ModelVersion(**json.loads(path.read_text()))

    def _write(self, mv: ModelVersion) -> None:
        write_atomic(self._file(mv.model, mv.version), _json(mv.__dict__))

    def create_version(
        self, model: str, artifact_uri: str, metrics: Mapping[str, float], tags: Mapping[str, str]
    ) -> ModelVersion:
        with self._lock(model):
            # the highest version file is the counter: written atomically, it cannot disagree
            existing = sorted((self.root / model).glob("v*.json"))
            last = int(existing[-1].stem[1:]) if existing else 0
            mv = ModelVersion(
                model=model,
                version=last + 1,
                status="pending",
                artifact_uri=artifact_uri,
                created_at=now(),
                metrics={k: float(v) for k, v in metrics.items()},
                tags={k: str(v) for k, v in tags.items()},
            )
            self._write(mv)
            return mv

    def get_version(self, model: str, version: int) -> ModelVersion:
        path = self._file(model, version)
        if not path.is_file():
            raise NotFoundError(f"model {model!r} has no version {version}")
        return self._read(path)

    def list_versions(self, model: str) -> list[ModelVersion]:
        return [self._read(p) for p in sorted((self.root / model).glob("v*.json"))]

    def list_models(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/v000001.json"))

    def set_status(self, model: str, version: int, status: str, reason: str = "") -> ModelVersion:
        with self._lock(model):
            current = self.get_version(model, version)
            updated = with_status(current, status, reason)
            if updated is not current:
                self._write(updated)
            return updated


class JsonlMetricsSink:
    """MetricsSink appending one JSON line per point."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def emit(self, points: Iterable[MetricPoint]) -> None:
        lines = [
            json.dumps({**p.__dict__, "timestamp": p.timestamp or now()}, sort_keys=True)
            for p in points
        ]
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.path}.lock"), self.path.open("a") as handle:
            handle.write("\n".join(lines) + "\n")

    def read(self) -> list[MetricPoint]:
        if not self.path.is_file():
            return []
        return [MetricPoint(**json.loads(line)) for line in self.path.read_text().splitlines()]


class SubprocessJobRunner:
    """JobRunner that runs `python -m ml.train` in a child process, like a cloud job would."""

    def __init__(self, store: DirectoryStore, work_dir: Path) -> None:
        self.store = store
        self.work_dir = Path(work_dir)

    def run_training(
        self, spec_path: Path, data_uri: str, output_key: str, *, progress: Progress | None = None
    ) -> JobResult:
        job_id = output_key.rstrip("/").rsplit("/", 1)[-1]
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
            model_dir = Path(tmp) / "model"
            command = [
                sys.executable, "-m", "ml.train", "--spec", str(spec_path), "--data", data_uri,
                "--model-dir", str(model_dir), "--run-id", job_id,
            ]  # fmt: skip
            if progress:
                progress(f"job {job_id}: training")
            done = subprocess.run(command, capture_output=True, text=True)
            log_key = f"{output_key.rstrip('/')}.log"
            logs_uri = self.store.put_bytes(log_key, (done.stdout + done.stderr).encode())
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise TandemError(f"training job {job_id} failed: {tail} (log: {logs_uri})")
            if progress:
                progress(f"job {job_id}: storing artifact")
            uri = self.store.put_artifact(model_dir, output_key)
        return JobResult(job_id=job_id, status="Completed", artifact_uri=uri, logs_uri=logs_uri)


class LocalEndpoint:
    """EndpointTarget that installs verified artifacts in a directory the local server reads."""

    def __init__(self, root: Path, store: DirectoryStore, url: str = "") -> None:
        self.root = Path(root)
        self.store = store
        self.url = url

    def deploy(self, version: ModelVersion, *, canary_weight: float | None = None) -> Deployment:
        current = self.current(version.model)
        if (
            current
            and current.version == version.version
            and current.canary_weight == canary_weight
        ):
            return current
        model_root = self.root / version.model
        installed = model_root / f"v{version.version}"
        if not (installed / artifact.MANIFEST).is_file():
            self._install(version.artifact_uri, installed)
        deployment = Deployment(
            model=version.model,
            version=version.version,
            artifact_uri=version.artifact_uri,
            endpoint=self.url or installed.resolve().as_uri(),
            deployed_at=now(),
            canary_weight=canary_weight,
            details={"path": str(installed.resolve())},
        )
        with FileLock(model_root / ".lock"):
            write_atomic(model_root / "current.json", _json(deployment.__dict__))
            with (model_root / "history.jsonl").open("a") as handle:
                handle.write(json.dumps(deployment.__dict__, sort_keys=True) + "\n")
        return deployment

    def _install(self, artifact_uri: str, installed: Path) -> None:
        """Download and verify beside `installed`, then rename: a failed or tampered download
        never leaves a directory that a later deploy would take as installed."""
        installed.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=installed.parent, prefix=f".{installed.name}."))
        try:
            self.store.get_artifact(artifact_uri, staging)
            try:
                os.replace(staging, installed)
            except OSError:
                if not (installed / artifact.MANIFEST).is_file():
                    raise
                shutil.rmtree(staging, ignore_errors=True)  # a concurrent deploy installed it
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def current(self, model: str) -> Deployment | None:
        path = self.root / model / "current.json"
        return Deployment(**json.loads(path.read_text())) if path.is_file() else None

    def history(self, model: str) -> list[Deployment]:
        path = self.root / model / "history.jsonl"
        if not path.is_file():
            return []
        return [Deployment(**json.loads(line)) for line in path.read_text().splitlines()]


def stack_outputs(name: str, home: Path | None = None) -> dict[str, Any]:
    """Create (if needed) the local stack `name` and return its outputs."""
    home = Path(home or os.environ.get("TANDEM_HOME", DEFAULT_HOME)).resolve()
    root = home / name
    path = root / "outputs.json"
    if path.is_file():
        return json.loads(path.read_text())
    outputs = {"cloud": "local", "stack": name, "root": str(root)}
    write_atomic(path, _json(outputs))
    return outputs


def connect(outputs: Mapping[str, Any]) -> Stack:
    try:
        root = Path(outputs["root"])
        name = str(outputs["stack"])
    except KeyError as exc:
        raise ConfigError(
            f"local stack outputs lack {exc.args[0]!r}: got {sorted(outputs)}"
        ) from None
    store = DirectoryStore(root / "store")
    return Stack(
        cloud="local",
        name=name,
        store=store,
        registry=FileRegistry(root / "registry"),
        metrics=JsonlMetricsSink(root / "metrics.jsonl"),
        jobs=SubprocessJobRunner(store, root / "jobs"),
        endpoint=LocalEndpoint(root / "endpoint", store, str(outputs.get("endpoint_url", ""))),
        outputs=dict(outputs),
    )
