"""The contracts every cloud adapter honours.

The lifecycle (`ml/lifecycle.py`) is written once against these Protocols; a cloud adds an
adapter (`local.py`, `aws/`, later `azure/`) and never a branch in the lifecycle. Every stack
passes the same conformance suite (`tests/contract/`).
Every method documents what a caller may rely on: idempotency, atomicity, ordering, errors.
Errors are the ones in `ml.errors`; an adapter translates its SDK's errors into them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from contract import naming
from ml.errors import InvalidNameError, InvalidTransitionError

if TYPE_CHECKING:
    from ml.spec import ModelSpec

# Registry states and the changes allowed between them.
PENDING, APPROVED, REJECTED, ARCHIVED = "pending", "approved", "rejected", "archived"
STATUSES = (PENDING, APPROVED, REJECTED, ARCHIVED)
TRANSITIONS: Mapping[str, frozenset[str]] = {
    PENDING: frozenset({APPROVED, REJECTED}),
    APPROVED: frozenset({ARCHIVED}),
    REJECTED: frozenset(),
    ARCHIVED: frozenset(),
}


def checked_model(name: str) -> str:
    """`name` if it is a valid model name (contract.naming), else InvalidNameError.

    Every entry that takes a model name checks it before touching anything: a name becomes
    a path, a key and a cloud resource name.
    """
    try:
        return naming.check_model_name(name)
    except ValueError as exc:
        raise InvalidNameError(str(exc)) from None


Progress = Callable[[str], None]
"""A callback for long-running steps; receives one human-readable line at a time."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model. `version` is assigned by the registry."""

    model: str
    version: int
    status: str
    artifact_uri: str
    created_at: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    status_reason: str = ""


def with_status(current: ModelVersion, status: str, reason: str = "") -> ModelVersion:
    """`current` moved to `status` (itself if it has that status already).

    Every registry calls this, so every cloud enforces the same state machine; raises
    InvalidTransitionError for an unknown status or a change TRANSITIONS does not allow.
    """
    if status not in STATUSES:
        raise InvalidTransitionError(
            f"{current.model} v{current.version}: unknown status {status!r} "
            f"(one of {', '.join(STATUSES)})"
        )
    if current.status == status:
        return current
    if status not in TRANSITIONS[current.status]:
        raise InvalidTransitionError(
            f"{current.model} v{current.version}: cannot go from {current.status} to {status} "
            f"(allowed: {sorted(TRANSITIONS[current.status]) or 'none'})"
        )
    return replace(current, status=status, status_reason=reason)


@dataclass(frozen=True)
class Deployment:
    """What an endpoint serves for a model after a deploy or a rollback."""

    model: str
    version: int
    artifact_uri: str
    endpoint: str
    deployed_at: str
    canary_weight: float | None = None
    details: dict[str, str] = field(default_factory=dict)


def primary_version(deployment: Deployment | None) -> int | None:
    """The version that takes the bulk of the traffic: the deployed one, or, while a canary
    runs, the one the canary was deployed beside (`details["primary_model_version"]`)."""
    if deployment is None:
        return None
    if deployment.canary_weight is None:
        return deployment.version
    return int(deployment.details["primary_model_version"])


@dataclass(frozen=True)
class MetricPoint:
    """One observation for the metrics sink; dimensions are e.g. {"Model": m, "Version": "3"}."""

    name: str
    value: float
    dimensions: dict[str, str] = field(default_factory=dict)
    unit: str = "None"
    timestamp: str | None = None


@dataclass(frozen=True)
class JobResult:
    """A finished training job: where its artifact landed and what it reported."""

    job_id: str
    status: str
    artifact_uri: str
    card: dict[str, Any] = field(default_factory=dict)  # the artifact's model_card.json
    logs_uri: str = ""


@runtime_checkable
class ArtifactStore(Protocol):
    """Stores model artifacts, datasets, run records and reports under string keys.

    Keys are '/'-separated relative paths (`models/credit/<run-id>/model.onnx`).
    """

    def uri_for(self, key: str) -> str:
        """The URI an object under `key` has (or would have) in this store."""
        ...

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write `data` under `key` (last write wins) and return its URI."""
        ...

    def get_bytes(self, uri_or_key: str) -> bytes:
        """Read an object. Raises NotFoundError when it does not exist."""
        ...

    def exists(self, uri_or_key: str) -> bool:
        """Whether an object is stored under `uri_or_key`."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under `prefix`, sorted. An empty list when there are none. Never lists the
        temporary files of a write in progress or interrupted."""
        ...

    def put_artifact(self, local_dir: Path, key: str) -> str:
        """Upload an artifact directory (with its MANIFEST.json) under `key`; return its URI.

        Verifies the local manifest before sending anything and the stored copy after,
        so a returned URI always points at a complete, verified artifact. Idempotent:
        putting identical content again returns the same URI. Putting different content
        under a key that already holds a complete artifact raises ConflictError.
        """
        ...

    def get_artifact(self, uri: str, dest: Path) -> Path:
        """Download the artifact at `uri` into `dest` and verify it against its manifest
        (model.tar.gz too, when stored).

        Raises NotFoundError if absent, ArtifactIntegrityError naming the file that differs.
        """
        ...


@runtime_checkable
class ModelRegistry(Protocol):
    """Versions of models and their approval state (see TRANSITIONS)."""

    def create_version(
        self,
        model: str,
        artifact_uri: str,
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
    ) -> ModelVersion:
        """Create the next version (status `pending`) pointing at an uploaded artifact.

        The registry assigns the version number: consecutive from 1, never reused, safe
        under concurrent callers. Callers create the version LAST, after the artifact is
        stored and verified, so no version ever exists without its artifact.
        """
        ...

    def get_version(self, model: str, version: int) -> ModelVersion:
        """One version. Raises NotFoundError."""
        ...

    def list_versions(self, model: str) -> list[ModelVersion]:
        """All versions of a model, oldest first. An empty list for an unknown model."""
        ...

    def list_models(self) -> list[str]:
        """Names of the models that have at least one version, sorted."""
        ...

    def set_status(self, model: str, version: int, status: str, reason: str = "") -> ModelVersion:
        """Move a version to `status`. Setting the status it already has is a no-op.

        Raises InvalidTransitionError for a change TRANSITIONS does not allow.
        """
        ...


@runtime_checkable
class MetricsSink(Protocol):
    """Where model quality, drift and serving metrics go (namespace `Tandem`)."""

    def emit(self, points: Iterable[MetricPoint]) -> None:
        """Send points; the adapter batches as its service requires. Never partial-silent:
        a failure raises."""
        ...


@runtime_checkable
class JobRunner(Protocol):
    """Runs `ml/train.py` where the cloud runs training jobs."""

    def run_training(
        self,
        spec: ModelSpec,
        data_uri: str,
        output_key: str,
        *,
        progress: Progress | None = None,
    ) -> JobResult:
        """Run one training job to completion and store its artifact under `output_key`.

        Blocks until the job ends. The returned `artifact_uri` is readable with
        ArtifactStore.get_artifact and `card` is its model card. A failed job raises
        TandemError with the job's reason; an interrupted caller (Ctrl-C, SIGTERM) stops the
        job it started and leaves no partial artifact behind.
        """
        ...


@runtime_checkable
class EndpointTarget(Protocol):
    """The inference endpoint of a stack, serving one version per model."""

    def deploy(self, version: ModelVersion, *, canary_weight: float | None = None) -> Deployment:
        """Serve `version` (optionally to a `canary_weight` share of traffic).

        Idempotent: deploying the version already live returns the current Deployment.
        Only `approved` versions may be deployed; the lifecycle checks that before calling.
        """
        ...

    def current(self, model: str) -> Deployment | None:
        """What is live for `model`, or None if nothing was ever deployed."""
        ...

    def history(self, model: str) -> list[Deployment]:
        """Every deployment of `model`, oldest first."""
        ...

    def invoke(
        self, model: str, rows: list[dict[str, Any]], *, route: str | None = None
    ) -> dict[str, Any]:
        """Score `rows` through the endpoint's own entry point, as a client would.

        `route` pins the request to the "live" or the "canary" version (smoke requests after
        a deploy); None lets the endpoint split traffic as deployed. Returns the endpoint's
        answer (deploy/service.py): {"model", "version", "request_id", "task", "classes",
        "predictions", "probabilities"}. Raises NotFoundError when nothing is deployed,
        TandemError when the endpoint refuses (its message included).
        """
        ...


@runtime_checkable
class Locks(Protocol):
    """Named locks that serialise changes to one model across processes and machines.

    `hold(name)` blocks until the lock is free (TandemError after `timeout` seconds) and
    releases it on exit, also on an exception. The lifecycle holds `model:<name>` while it
    chooses a version and points the endpoint at it, so a deploy and a rollback never
    interleave.
    """

    def hold(self, name: str, timeout: float = 120.0) -> AbstractContextManager[None]: ...


@dataclass
class Stack:
    """One of each component, for one environment (dev, staging, prod) of one cloud."""

    cloud: str
    name: str
    store: ArtifactStore
    registry: ModelRegistry
    metrics: MetricsSink
    jobs: JobRunner
    endpoint: EndpointTarget
    locks: Locks
    outputs: dict[str, Any] = field(default_factory=dict)
    # the stack's own MLflow tracking server (a SageMaker server's ARN on AWS), which the
    # lifecycle mirrors into when MLFLOW_TRACKING_URI is not set (ml/tracking.py)
    tracking_uri: str | None = None
    # the per-stack key of personal-data pseudonyms (contract.privacy); read on first use
    pseudonym_key: Callable[[], bytes] | None = None
