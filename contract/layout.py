"""The artifact store's layout: every key Tandem writes is built here.

    artifacts/<model>/<run>/                 a model artifact (MANIFEST.json written last)
    artifacts/<model>/<run>/code/            a cloud job's code tarball
    artifacts/<model>/<run>/output/          what a cloud training job wrote
    runs/<model>/<run>.json                  one record per training run
    reports/<model>/<run>.html               one HTML report per pipeline run
    registry/<model>/v<version>.json         one side record per registered version
    deployments/<model>/<time>-v<n>-<id>.json  one record per deployment, in time order
    captures/<model>/v<n>/<YYYY-MM-DD>/<HH>/<stamp>-<batch>.jsonl
                                             sampled requests and predictions (deploy/capture.py)
    datasets/<model>/<sha256>.<csv|parquet>  staged training data (the data bucket on AWS)
    locks/<name>.json                        a lease that serialises changes to one model
    mlflow/                                  MLflow artifacts, when a stack hosts MLflow
    lambda/<archive>.zip                     the serving functions' code (AWS; the platform's,
                                             never listed or written by the ML side)

Keys are '/'-separated and relative; prefixes end with '/'.
"""

from __future__ import annotations

from datetime import UTC, datetime

DATASETS = "datasets/"
ARTIFACTS = "artifacts/"
CAPTURES = "captures/"
RUNS = "runs/"
REPORTS = "reports/"
REGISTRY = "registry/"
DEPLOYMENTS = "deployments/"
LOCKS = "locks/"
MLFLOW = "mlflow/"
LAMBDA_CODE = "lambda/"
# the models bucket's prefixes the ML side writes (the data bucket holds DATASETS)
MODEL_PREFIXES = (ARTIFACTS, RUNS, REPORTS, CAPTURES, REGISTRY, DEPLOYMENTS, LOCKS)

# Azure keeps the layout in four blob containers, by role: a key's first segment picks its
# container, and the key is the blob's name in it. Roles are the stack output `containers`.
AZURE_CONTAINERS = {
    "data": (DATASETS,),
    "models": (ARTIFACTS, RUNS, REGISTRY, DEPLOYMENTS, LOCKS, MLFLOW),
    "captures": (CAPTURES,),
    "reports": (REPORTS,),
}


def azure_container_role(key: str) -> str:
    """The role of the container that holds `key` (models unless its prefix says otherwise)."""
    for role, prefixes in AZURE_CONTAINERS.items():
        if any(key.startswith(prefix) for prefix in prefixes):
            return role
    return "models"


CODE_DIR = "code"
OUTPUT_DIR = "output"


def artifact_key(model: str, run_id: str) -> str:
    return f"{ARTIFACTS}{model}/{run_id}"


def code_key(artifact: str, filename: str) -> str:
    return f"{artifact.strip('/')}/{CODE_DIR}/{filename}"


def output_key(artifact: str) -> str:
    return f"{artifact.strip('/')}/{OUTPUT_DIR}"


def run_key(model: str, run_id: str) -> str:
    return f"{RUNS}{model}/{run_id}.json"


def runs_prefix(model: str | None = None) -> str:
    return f"{RUNS}{model}/" if model else RUNS


def report_key(model: str, run_id: str) -> str:
    return f"{REPORTS}{model}/{run_id}.html"


def registry_key(model: str, version: int) -> str:
    return f"{REGISTRY}{model}/v{version}.json"


def deployments_prefix(model: str) -> str:
    return f"{DEPLOYMENTS}{model}/"


def deployment_key(model: str, stamp: str, version: int, nonce: str) -> str:
    """`stamp` first (UTC, fixed width), so key order is deployment order."""
    return f"{deployments_prefix(model)}{stamp}-v{version}-{nonce}.json"


def registry_prefix(model: str | None = None) -> str:
    return f"{REGISTRY}{model}/" if model else REGISTRY


def lock_key(name: str) -> str:
    return f"{LOCKS}{name}.json"


def captures_prefix(model: str) -> str:
    return f"{CAPTURES}{model}/"


UNVERSIONED = "unversioned"  # the version segment of a model served without a version number


def capture_partition(model: str, version: int | None, hour: datetime | None = None) -> str:
    """`captures/<model>/v<n>/`, or with `hour` (timezone-aware, taken in UTC) the one hour
    `captures/<model>/v<n>/<YYYY-MM-DD>/<HH>/`: what a reader lists, what lifecycle rules expire."""
    prefix = f"{captures_prefix(model)}{f'v{version}' if version is not None else UNVERSIONED}/"
    if hour is None:
        return prefix
    if hour.tzinfo is None:
        raise ValueError("a capture hour must be timezone-aware (UTC)")
    return f"{prefix}{hour.astimezone(UTC).strftime('%Y-%m-%d/%H')}/"


def capture_key(model: str, version: int | None, at: datetime, batch_id: str) -> str:
    """One batch of captured rows of one model version, first captured at `at`: filed under
    `at`'s hour, named by `at` (fixed width, so keys sort by time within the hour)."""
    partition = capture_partition(model, version, at)  # refuses a naive `at`
    return f"{partition}{at.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{batch_id}.jsonl"


def dataset_key(model: str, digest: str, suffix: str) -> str:
    return f"{DATASETS}{model}/{digest}.{suffix}"
