"""The embedded local stack: a directory that needs no cloud account.

    <root>/outputs.json        the same shape of outputs a Pulumi stack exports
    <root>/store/<key>         artifact store, laid out as contract.layout says (artifacts/,
                               runs/, reports/, registry/, deployments/, datasets/)
    <root>/locks/              one lock file per model (serialises deploy, rollback, register)
    <root>/metrics.jsonl       metrics sink
    <root>/endpoint/<model>/   installed (verified) copies of deployed artifacts
    <root>/jobs/               training jobs in progress (removed when they end)
    <root>/pseudonym.key       the stack's pseudonymisation key (mode 0600)

Writers are safe under concurrency: every read-modify-write holds a file lock, and every
file is written to a temporary (hidden) name and renamed into place (atomic on POSIX), so
readers never see half a file and listings never show a write in progress.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from filelock import FileLock, Timeout

from contract import naming, privacy, serving
from contract.outputs import LOCAL
from ml import artifact
from ml.clouds import packaging, verified
from ml.clouds.answers import answer_or_error, post_json
from ml.clouds.base import (
    PENDING,
    Deployment,
    JobResult,
    MetricPoint,
    ModelVersion,
    Progress,
    Stack,
    checked_model,
    primary_version,
    with_status,
)
from ml.clouds.locks import ReentrantLocks, model_lock, safe_name
from ml.clouds.records import DeploymentLog, VersionRecords, now, to_json
from ml.errors import ArtifactIntegrityError, ConfigError, NotFoundError, TandemError
from ml.spec import ModelSpec

if TYPE_CHECKING:
    from deploy.service import Service

DEFAULT_HOME = ".tandem"
KEY_FILE = "pseudonym.key"


@contextlib.contextmanager
def _hidden_copy(path: Path, data: bytes) -> Iterator[str]:
    """`data` written whole and synced under a hidden name beside `path` (mode 0600), removed
    on exit unless it was renamed into place. Hidden names are never listed by the store."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        yield tmp
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` whole: readers never see half a file (last write wins)."""
    with _hidden_copy(path, data) as tmp:
        os.replace(tmp, path)


def write_new(path: Path, data: bytes) -> bool:
    """Create `path` holding `data` only if it does not exist, atomically and whole; False
    when the name existed already (of two writers, the first link wins)."""
    with _hidden_copy(path, data) as tmp:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    return True


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

    def _key(self, uri_or_key: str) -> str:
        return self._path(uri_or_key).relative_to(self.root).as_posix()

    # objects
    def uri_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        write_atomic(path, data)
        return path.as_uri()

    def get_bytes(self, uri_or_key: str) -> bytes:
        data = self.read(uri_or_key)
        if data is None:
            raise NotFoundError(f"{uri_or_key}: no such object")
        return data

    def exists(self, uri_or_key: str) -> bool:
        return self._path(uri_or_key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [self._key(prefix)]
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            relative = path.relative_to(self.root)
            # hidden names are writes in progress or interrupted (write_atomic, put_new)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                keys.append(relative.as_posix())
        return sorted(keys)

    # ObjectBackend, for the shared verified transfer (ml/clouds/verified.py)
    def upload_file(self, path: Path, key: str) -> None:
        write_atomic(self._path(key), Path(path).read_bytes())

    def download_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise NotFoundError(f"{source.as_uri()}: no such object")
        shutil.copyfile(source, path)

    def check_stored(self, path: Path, key: str) -> None:
        stored = self._path(key)
        if not stored.is_file():
            raise ArtifactIntegrityError(
                f"{Path(path).name}: missing from {stored.parent.as_uri()}"
            )
        if artifact.sha256_file(stored) != artifact.sha256_file(Path(path)):
            raise ArtifactIntegrityError(
                f"{Path(path).name}: stored copy differs ({stored.as_uri()})"
            )

    def put_new(self, key: str, data: bytes) -> bool:
        return write_new(self._path(key), data)

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    # artifacts
    def put_artifact(self, local_dir: Path, key: str) -> str:
        key = self._key(key.strip("/"))
        uri = self.uri_for(key)
        verified.put_artifact(self, Path(local_dir), key, uri)
        return uri

    def get_artifact(self, uri: str, dest: Path) -> Path:
        key = self._key(uri.rstrip("/"))
        return verified.get_artifact(self, key, Path(dest), self.uri_for(key))


class FileLocks(ReentrantLocks):
    """Locks as files under `<root>/locks/`: the kernel releases them if a holder dies."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = Path(root)

    def _acquire(self, name: str, timeout: float) -> Callable[[], None]:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.root / f"{safe_name(name)}.lock", timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise TandemError(
                f"{name}: still locked by another process after {timeout:g}s"
            ) from None
        return lock.release


class FileRegistry:
    """ModelRegistry over version records in the store; the model's lock guards numbering."""

    def __init__(self, store: DirectoryStore, locks: FileLocks) -> None:
        self.records = VersionRecords(store)
        self.locks = locks

    def create_version(
        self, model: str, artifact_uri: str, metrics: Mapping[str, float], tags: Mapping[str, str]
    ) -> ModelVersion:
        model = checked_model(model)
        with self.locks.hold(model_lock(model)):
            existing = self.records.versions(model)
            mv = ModelVersion(
                model=model,
                version=(existing[-1] if existing else 0) + 1,
                status=PENDING,
                artifact_uri=artifact_uri,
                created_at=now(),
                metrics={k: float(v) for k, v in metrics.items()},
                tags={k: str(v) for k, v in tags.items()},
            )
            self.records.write(mv)
            return mv

    def get_version(self, model: str, version: int) -> ModelVersion:
        record = self.records.read(checked_model(model), version)
        if record is None:
            raise NotFoundError(f"model {model!r} has no version {version}")
        return ModelVersion(**record)

    def list_versions(self, model: str) -> list[ModelVersion]:
        model = checked_model(model)
        return [self.get_version(model, v) for v in self.records.versions(model)]

    def list_models(self) -> list[str]:
        return self.records.models()

    def set_status(self, model: str, version: int, status: str, reason: str = "") -> ModelVersion:
        with self.locks.hold(model_lock(checked_model(model))):
            current = self.get_version(model, version)
            updated = with_status(current, status, reason)
            if updated is not current:
                self.records.write(updated)
            return updated


class JsonlMetricsSink:
    """MetricsSink appending one JSON line per point."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def emit(self, points: Iterable[MetricPoint]) -> None:
        lines = [
            json.dumps({**asdict(p), "timestamp": p.timestamp or now()}, sort_keys=True)
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


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SubprocessJobRunner:
    """JobRunner that runs `python -m ml.train` in a child process, like a cloud job would.

    The child dies with its parent (Ctrl-C, SIGTERM, or a SIGKILL of the parent), and a job
    directory left by a parent that died is removed by the next run.
    """

    def __init__(self, store: DirectoryStore, work_dir: Path) -> None:
        self.store = store
        self.work_dir = Path(work_dir)

    def _sweep(self) -> None:
        for leftover in self.work_dir.glob("job-*"):
            pid = leftover.name.split("-")[1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)

    def run_training(
        self, spec: ModelSpec, data_uri: str, output_key: str, *, progress: Progress | None = None
    ) -> JobResult:
        job_id = output_key.rstrip("/").rsplit("/", 1)[-1]
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._sweep()
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix=f"job-{os.getpid()}-") as tmp:
            model_dir, spec_file = Path(tmp) / "model", Path(tmp) / "spec.json"
            spec_file.write_bytes(packaging.spec_bytes(spec))
            command = [
                sys.executable, "-m", "ml.train", "--spec", str(spec_file), "--data", data_uri,
                "--model-dir", str(model_dir), "--run-id", job_id,
            ]  # fmt: skip
            if progress:
                progress(f"job {job_id}: training")
            child = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=_die_with_parent,
            )
            try:
                stdout, stderr = child.communicate()
            except BaseException:  # Ctrl-C, SIGTERM: the job stops with its caller
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                raise
            logs_uri = self.store.put_bytes(
                f"{output_key.rstrip('/')}.log", (stdout + stderr).encode()
            )
            if child.returncode != 0:
                tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
                raise TandemError(f"training job {job_id} failed: {tail} (log: {logs_uri})")
            if progress:
                progress(f"job {job_id}: storing artifact")
            uri = self.store.put_artifact(model_dir, output_key)
            card = json.loads((model_dir / artifact.CARD).read_text())
        return JobResult(
            job_id=job_id, status="Completed", artifact_uri=uri, card=card, logs_uri=logs_uri
        )


class LocalEndpoint:
    """EndpointTarget over `deploy/server.py`: what is live (and a canary) per model.

    A deploy installs a verified copy of the artifact under `<root>/<model>/v<n>/` and then
    rewrites `<root>/<model>/serving.json` (contract.serving.STATE_FILE) atomically; a running
    `tandem serve` watches that file and swaps models without a restart. The installed copy is
    a cache of the store's: it is verified on every deploy (a changed file is replaced by a
    fresh, verified copy from the store, never served).
    """

    def __init__(self, root: Path, store: DirectoryStore, url: str = "") -> None:
        self.root = Path(root)
        self.store = store
        self.url = url
        self.log = DeploymentLog(store)

    def _installed(self, model: str, version: int) -> Path:
        return self.root / checked_model(model) / f"v{version}"

    def state_path(self, model: str) -> Path:
        """The file `tandem serve` watches for `model`."""
        return self.root / checked_model(model) / serving.STATE_FILE

    def server_url(self, model: str) -> str | None:
        """The URL of a running `tandem serve` for `model`, if one is running."""
        path = self.root / checked_model(model) / serving.SERVER_FILE
        try:
            server = json.loads(path.read_text())
            pid, url = int(server["pid"]), str(server["url"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return url if _alive(pid) else None

    def deploy(self, version: ModelVersion, *, canary_weight: float | None = None) -> Deployment:
        if canary_weight is not None and not 0.0 < canary_weight < 1.0:
            raise TandemError(
                f"canary_weight must be between 0 and 1 (exclusive), got {canary_weight}"
            )
        installed = self._ensure_installed(version)
        current = self.current(version.model)
        if (
            current
            and current.version == version.version
            and current.canary_weight == canary_weight
            and self.state_path(version.model).is_file()
        ):
            return current
        details = {"path": str(installed.resolve())}
        live = {"version": version.version, "path": details["path"]}
        canary = None
        if canary_weight is not None:
            primary = primary_version(current)
            if primary is None or primary == version.version:
                raise TandemError(
                    f"{version.model} v{version.version}: a canary needs another live version "
                    "of the model to keep as the primary; deploy without a canary first"
                )
            primary_dir = self._installed(version.model, primary)
            artifact.verify(primary_dir)  # the primary keeps serving: it must still verify
            live = {"version": primary, "path": str(primary_dir.resolve())}
            canary = {"version": version.version, "path": details["path"], "weight": canary_weight}
            details["primary_model_version"] = str(primary)
        deployment = Deployment(
            model=version.model,
            version=version.version,
            artifact_uri=version.artifact_uri,
            endpoint=self.url or self.state_path(version.model).resolve().as_uri(),
            deployed_at=now(),
            canary_weight=canary_weight,
            details=details,
        )
        state = {"model": version.model, "live": live, "canary": canary}
        write_atomic(self.state_path(version.model), to_json(state))
        self.log.append(deployment)
        return deployment

    def _ensure_installed(self, version: ModelVersion) -> Path:
        installed = self._installed(version.model, version.version)
        if (installed / artifact.MANIFEST).is_file():
            try:
                artifact.verify(installed)
                return installed
            except ArtifactIntegrityError:
                shutil.rmtree(installed, ignore_errors=True)  # reinstalled from the store below
        self._install(version.artifact_uri, installed)
        return installed

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
        return self.log.current(checked_model(model))

    def history(self, model: str) -> list[Deployment]:
        return self.log.history(checked_model(model))

    def _service(self, model: str) -> Service:
        """The Service a server would run for `model`, in this process."""
        from deploy.service import Service

        try:
            return Service.from_state(self.state_path(model))
        except Exception as exc:  # onnxruntime has its own error types for a bad graph
            raise TandemError(f"{model}: the deployed model cannot be loaded ({exc})") from None

    def invoke(
        self, model: str, rows: list[dict[str, Any]], *, route: str | None = None
    ) -> dict[str, Any]:
        """Through the running `tandem serve` when there is one (over HTTP), else through the
        same Service in this process, loaded from the state file the server would read."""
        if self.current(model) is None or not self.state_path(model).is_file():
            raise NotFoundError(f"model {model!r} is not deployed")
        body = json.dumps({"instances": rows}).encode()
        headers = {"content-type": "application/json"}
        if route:
            headers[serving.ROUTE_HEADER] = route
        url = self.server_url(model)
        try:
            if url:
                status, answer = post_json(url + serving.PREDICT_PATH, body, headers)
            else:
                service = self._service(model)
                response = service.handle("POST", serving.PREDICT_PATH, headers, body)
                status, answer = response.status, json.loads(response.body)
        except (OSError, ValueError) as exc:
            raise TandemError(f"{model}: the endpoint could not be reached ({exc})") from None
        return answer_or_error(model, status, answer)


def _pseudonym_key(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        if not path.is_file():
            write_new(path, secrets.token_bytes(privacy.KEY_BYTES))  # the first reader's wins
        key = path.read_bytes()
        if len(key) != privacy.KEY_BYTES:
            raise ConfigError(f"{path}: not a pseudonymisation key of {privacy.KEY_BYTES} bytes")
        return key

    return read


def stack_outputs(name: str, home: Path | None = None) -> dict[str, Any]:
    """Create (if needed) the local stack `name` and return its outputs."""
    try:
        naming.check_stack_name(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    home = Path(home or os.environ.get("TANDEM_HOME", DEFAULT_HOME)).resolve()
    root = home / name
    path = root / "outputs.json"
    if path.is_file():
        return json.loads(path.read_text())
    outputs = {"cloud": "local", "stack": name, "root": str(root)}
    write_atomic(path, to_json(outputs))
    return outputs


def connect(outputs: Mapping[str, Any]) -> Stack:
    missing = LOCAL.missing(outputs)
    if missing:
        raise ConfigError(f"local stack outputs lack {missing}: got {sorted(outputs)}")
    root = Path(outputs["root"])
    store = DirectoryStore(root / "store")
    locks = FileLocks(root / "locks")
    return Stack(
        cloud="local",
        name=str(outputs["stack"]),
        store=store,
        registry=FileRegistry(store, locks),
        metrics=JsonlMetricsSink(root / "metrics.jsonl"),
        jobs=SubprocessJobRunner(store, root / "jobs"),
        endpoint=LocalEndpoint(root / "endpoint", store, str(outputs.get("endpoint_url", ""))),
        locks=locks,
        outputs=dict(outputs),
        pseudonym_key=_pseudonym_key(root / KEY_FILE),
    )
