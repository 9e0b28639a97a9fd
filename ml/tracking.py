"""Mirror a Tandem run into MLflow, when `MLFLOW_TRACKING_URI` names a tracking server (or,
when it is not set, the stack has one of its own: `Stack.tracking_uri`, on AWS the SageMaker
tracking server of `tandem:aws.mlflow`).

Tandem's store and registry are the record; MLflow is a mirror, and it never gets in the way:
- every call runs after the artifact is stored, and MLflow's HTTP timeout and retries are
  bounded (unless the caller set them), so a server that is down costs seconds, not minutes;
- any failure becomes ONE `TrackingWarning` per process and tracking URI (later calls to that
  URI are skipped); the run, its artifact and its registered version are never lost;
- `file:` URIs and bare paths are refused before training (`check_uri`): MLflow 3 refuses its
  file store, and a relative path would write into the working directory's ./mlruns. A
  `sqlite:` database gets its artifacts beside it, never in the working directory.

One MLflow run per Tandem run, in the experiment named after the model and tagged
`tandem.run_id`: the training job logs it (params, metrics, the model as a pyfunc model), the
lifecycle logs it from the stored artifact if the job could not, and after registration sets
the gate verdict and the version on it. With TANDEM_MLFLOW_REGISTRY=1 the version is also
an MLflow model version, and every later state change (approve, reject, archive on rollback)
is mirrored onto it: its tag `tandem.status`, and the alias `champion` on the MLflow version
of Tandem's newest approved version (removed when there is none). mlflow is imported only
here, and only when used (the `[mlflow]` extra); a SageMaker tracking server ARN needs the
`sagemaker-mlflow` plugin (in the same extra).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ml.clouds.base import APPROVED
from ml.errors import ConfigError

URI_ENV = "MLFLOW_TRACKING_URI"
REGISTRY_ENV = "TANDEM_MLFLOW_REGISTRY"  # "1": also mirror versions into MLflow's registry
MODEL_NAME = "model"  # the logged model's name in the run
CHAMPION_ALIAS = "champion"  # MLflow alias of Tandem's newest approved version
# Bounds on MLflow's own HTTP client (mlflow.environment_variables); its defaults (120 s
# timeout, 7 retries with backoff) hold a pipeline ~250 s on a server that is down.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
MAX_PARAM_CHARS = 6000  # MLflow refuses a longer param value (and the whole batch with it)

_failed: set[str] = set()  # tracking URIs that failed once in this process: warned, skipped


class TrackingWarning(UserWarning):
    """MLflow tracking failed; Tandem's own run, artifact and version are unaffected."""


def tracking_uri(stack_uri: str | None = None) -> str | None:
    """The tracking URI: MLFLOW_TRACKING_URI, else the stack's own server, else None (off)."""
    return os.environ.get(URI_ENV, "").strip() or stack_uri or None


def check_uri(uri: str | None = None) -> None:
    """Refuse, before any training, a tracking URI MLflow 3 cannot use as a server."""
    uri = uri or tracking_uri()
    if uri is None:
        return
    scheme = urlsplit(uri).scheme
    if scheme == "file" or len(scheme) <= 1:  # a bare path (or a Windows drive letter)
        raise ConfigError(
            f"{URI_ENV}={uri!r}: MLflow 3 refuses the file store, and a path would write into "
            "./mlruns; use a server (http://host:5000), a database "
            "(sqlite:////abs/path/mlflow.db) or unset it"
        )


def log_run(card: dict[str, Any], artifact_dir: Path, *, artifact_uri: str = "") -> str | None:
    """Log one sealed artifact as an MLflow run; return the MLflow run id (None: not logged)."""
    uri = tracking_uri()
    if uri is None or uri in _failed:
        return None
    with _guard(uri, card["run_id"]):
        check_uri(uri)
        return _log(uri, card, Path(artifact_dir), artifact_uri)
    return None


def mirror_training(store: Any, outcome: Any, *, stack_uri: str | None = None) -> str | None:
    """After the lifecycle stored a run: find its MLflow run (the job logs it when it can
    reach the server) or log it from the stored, verified artifact. Returns the run id."""
    uri = tracking_uri(stack_uri)
    if uri is None or uri in _failed:
        return None
    with _guard(uri, outcome.run_id):
        found = _find(uri, outcome.card["spec"]["name"], outcome.run_id)
        if found is not None:
            _client(uri).set_tag(found, "tandem.artifact_uri", outcome.artifact_uri)
            return found
        with tempfile.TemporaryDirectory() as tmp:
            local = store.get_artifact(outcome.artifact_uri, Path(tmp) / "artifact")
            return _log(uri, outcome.card, local, outcome.artifact_uri)
    return None


def mirror_registration(
    outcome: Any, version: Any, verdict: Any, *, stack_uri: str | None = None
) -> None:
    """Tag the run with the gate verdict and the version Tandem registered (and, with
    TANDEM_MLFLOW_REGISTRY=1, register the logged model in MLflow's registry too)."""
    uri = tracking_uri(stack_uri)
    if uri is None or uri in _failed:
        return
    with _guard(uri, outcome.run_id):
        found = _find(uri, version.model, outcome.run_id)
        if found is None:
            raise LookupError(f"no MLflow run tagged tandem.run_id={outcome.run_id!r}")
        tags = {
            "tandem.gate": "passed" if verdict.passed else "failed",
            "tandem.gate_reasons": "; ".join(verdict.reasons)[:MAX_PARAM_CHARS],
            "tandem.version": str(version.version),
            "tandem.registered_status": version.status,  # pending or rejected
        }
        client = _client(uri)
        for key, value in tags.items():
            client.set_tag(found, key, value)
        if os.environ.get(REGISTRY_ENV) == "1":
            _register(client, found, version)


def mirror_status(stack: Any, version: Any) -> None:
    """With TANDEM_MLFLOW_REGISTRY=1, after Tandem changed `version`'s status: set the MLflow
    model version's `tandem.status`, and put the `champion` alias on the MLflow version of
    the newest approved Tandem version (or remove it: no approved version is mirrored).

    A version mirrored nowhere (registered with the mirror off, or promoted from another
    stack) has nothing to update; that is not a failure."""
    uri = tracking_uri(stack.tracking_uri)
    if uri is None or uri in _failed or os.environ.get(REGISTRY_ENV) != "1":
        return
    with _guard(uri, version.tags.get("run_id", f"{version.model} v{version.version}")):
        client = _client(uri)
        mirrored = _mirrored_versions(client, version.model)
        if not mirrored:
            return
        if (own := mirrored.get(version.version)) is not None:
            client.set_model_version_tag(version.model, own, "tandem.status", version.status)
        approved = [
            v.version for v in stack.registry.list_versions(version.model) if v.status == APPROVED
        ]
        champion = next((mirrored[v] for v in reversed(approved) if v in mirrored), None)
        if champion is not None:
            client.set_registered_model_alias(version.model, CHAMPION_ALIAS, champion)
        elif CHAMPION_ALIAS in _aliases(client, version.model):
            client.delete_registered_model_alias(version.model, CHAMPION_ALIAS)


# --- internals ------------------------------------------------------------------------------


@contextmanager
def _bounded() -> Iterator[None]:
    """MLflow's HTTP bounds for the duration of a call, unless the caller set their own."""
    added = [k for k in HTTP_BOUNDS if k not in os.environ]
    os.environ.update({k: HTTP_BOUNDS[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextmanager
def _guard(uri: str, run_id: str) -> Iterator[None]:
    """Bound the call; turn any failure into the one warning for this URI."""
    try:
        with _bounded():
            yield
    except Exception as exc:  # anything MLflow (or a plugin, or the network) raises
        _failed.add(uri)
        why = " ".join(f"{type(exc).__name__}: {exc}".split())
        warnings.warn(
            f"MLflow tracking at {uri} failed ({why[:300]}); Tandem's run {run_id}, its "
            "artifact and its registered version are kept; nothing more is sent to this "
            "MLflow server from this process",
            TrackingWarning,
            stacklevel=3,
        )


def _client(uri: str):
    import mlflow

    # The sagemaker-mlflow plugin routes a request by the process's tracking URI (a header
    # naming the server's ARN), not the client's: both must name the same server.
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def _find(uri: str, model: str, run_id: str) -> str | None:
    client = _client(uri)
    experiment = client.get_experiment_by_name(model)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`tandem.run_id` = '{run_id}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _experiment(uri: str, name: str) -> str:
    """The experiment's id; a new one on a sqlite: database keeps its artifacts beside it."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    if (found := client.get_experiment_by_name(name)) is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///")).resolve()
        location = (database.parent / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # made meanwhile by another run
        return client.get_experiment_by_name(name).experiment_id


def _log(uri: str, card: dict[str, Any], artifact_dir: Path, artifact_uri: str) -> str:
    import mlflow

    from ml import artifact

    spec = card["spec"]
    mlflow.set_tracking_uri(uri)
    experiment_id = _experiment(uri, spec["name"])
    with mlflow.start_run(experiment_id=experiment_id, run_name=card["run_id"]) as run:
        mlflow.set_tags(_tags(card, artifact_uri))
        mlflow.log_params(params(card))
        mlflow.log_metrics(metrics(card))
        mlflow.log_dict(card, "tandem/model_card.json")
        mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(Path(__file__).with_name("tracking_pyfunc.py")),
            artifacts={
                "onnx": str(artifact_dir / artifact.ONNX),
                "card": str(artifact_dir / artifact.CARD),
            },
            signature=signature(card),
            input_example=input_example(card),
            pip_requirements=_requirements(),
        )
        return run.info.run_id


def params(card: dict[str, Any]) -> dict[str, str]:
    """The spec (flattened), task, estimator (kind and every fitted parameter), data and split."""
    flat = _flatten("spec", card["spec"])
    flat["task"] = card.get("task", "binary")
    flat["estimator.kind"] = card["spec"]["estimator"]["kind"]
    flat.update(_flatten("estimator", card["params"]))
    flat.update(_flatten("data", card["data"]))
    return {k: _text(v) for k, v in flat.items() if v is not None}


def metrics(card: dict[str, Any]) -> dict[str, float]:
    values = dict(card["metrics"])
    for key in ("onnx_parity_max_abs_diff", "training_seconds", "fit_seconds"):
        if isinstance(card.get(key), int | float):
            values[key] = card[key]
    return {k: float(v) for k, v in values.items() if v == v}  # NaN is absent, not a value


def _tags(card: dict[str, Any], artifact_uri: str) -> dict[str, str]:
    tags = {
        "tandem.run_id": card["run_id"],
        "tandem.model": card["spec"]["name"],
        "tandem.data_hash": card["data"]["hash"],
        "tandem.code_version": card["code_version"],
        "tandem.environment": card.get("environment", ""),
    }
    if artifact_uri:
        tags["tandem.artifact_uri"] = artifact_uri
    return tags


def signature(card: dict[str, Any]):
    """Input columns from the card's input schema; one float output column per class (or
    `prediction`), as tracking_pyfunc answers."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    # A numeric feature is declared "any": MLflow refuses an int64 column where a double is
    # declared (age=41 would fail); the model converts numbers itself. Any value may be
    # missing (null), as at Tandem's endpoint.
    inputs = Schema(
        [
            ColSpec(AnyType() if f["type"] == "numeric" else "string", f["name"], required=False)
            for f in card["input_schema"]["features"]
        ]
    )
    classes = card.get("labels") or card.get("classes")  # the spec's own labels
    names = [str(c) for c in classes] if classes else ["prediction"]
    return ModelSignature(inputs, Schema([ColSpec("float", n) for n in names]))


def input_example(card: dict[str, Any]):
    """Two plausible rows from the input schema: each numeric feature's minimum and maximum,
    the first and last known category."""
    import pandas as pd

    rows: list[dict[str, Any]] = [{}, {}]
    for feature in card["input_schema"]["features"]:
        if feature["type"] == "numeric":
            values = [float(feature["min"]), float(feature["max"])]
        else:
            known = feature.get("categories") or ["__missing__"]
            values = [str(known[0]), str(known[-1])]
        for row, value in zip(rows, values, strict=True):
            row[feature["name"]] = value
    return pd.DataFrame(rows)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("onnxruntime", "numpy", "pandas")]


def _register(client: Any, run_id: str, version: Any) -> None:
    """Mirror the version into MLflow's registry once per run; its status as a tag."""
    existing = client.search_model_versions(f"name='{version.model}' and run_id='{run_id}'")
    if existing:
        mirrored = existing[0]
    else:
        if not client.search_registered_models(f"name='{version.model}'"):
            client.create_registered_model(version.model)
        source = f"runs:/{run_id}/{MODEL_NAME}"
        mirrored = client.create_model_version(version.model, source, run_id=run_id)
    for key, value in (("tandem.version", str(version.version)), ("tandem.status", version.status)):
        client.set_model_version_tag(version.model, mirrored.version, key, value)


def _mirrored_versions(client: Any, model: str) -> dict[int, str]:
    """{Tandem version: MLflow model version} of the versions mirrored into MLflow."""
    found = client.search_model_versions(f"name='{model}'")
    return {
        int(v.tags["tandem.version"]): v.version
        for v in found
        if str(v.tags.get("tandem.version", "")).isdigit()
    }


def _aliases(client: Any, model: str) -> list[str]:
    return list(client.get_registered_model(model).aliases)


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(f"{prefix}.{key}", item))
        return flat
    return {prefix: value}


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 1] + "…"
