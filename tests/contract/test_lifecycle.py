"""The lifecycle (ml/lifecycle.py) on every stack: registration, promotion, deploy, rollback.

Written against the Protocols only; each stack's endpoint, registry and store together must
give the same answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from ml import artifact, lifecycle
from ml.clouds.base import APPROVED, ARCHIVED, PENDING, ModelVersion, Stack
from ml.errors import ArtifactIntegrityError, NotFoundError, TandemError
from tests.contract.conftest import MODEL, Cloud, store_artifact


# -- register --------------------------------------------------------------------------------
def test_register_creates_a_pending_version_for_a_stored_artifact(
    stack: Stack, artifact_dir: Path
) -> None:
    uri = store_artifact(stack, artifact_dir, "run-1")
    version = lifecycle.register(stack, MODEL, uri, {"roc_auc": 0.8}, {"run_id": "run-1"})
    assert (version.version, version.status, version.artifact_uri) == (1, PENDING, uri)


def test_register_refuses_an_artifact_that_is_not_stored(stack: Stack) -> None:
    with pytest.raises(NotFoundError):
        lifecycle.register(stack, MODEL, stack.store.uri_for("artifacts/credit/nope"), {}, {})
    assert stack.registry.list_versions(MODEL) == []


def test_register_refuses_a_tampered_artifact(stack: Stack, artifact_dir: Path) -> None:
    uri = store_artifact(stack, artifact_dir, "run-1")
    stack.store.put_bytes("artifacts/credit/run-1/model.onnx", b"not a model")
    with pytest.raises(ArtifactIntegrityError, match=re.escape(artifact.ONNX)):
        lifecycle.register(stack, MODEL, uri, {}, {})
    assert stack.registry.list_versions(MODEL) == []


def test_registering_the_same_run_twice_gives_the_same_version(
    stack: Stack, artifact_dir: Path
) -> None:
    uri = store_artifact(stack, artifact_dir, "run-1")
    first = lifecycle.register(stack, MODEL, uri, {"roc_auc": 0.8}, {"run_id": "run-1"})
    again = lifecycle.register(stack, MODEL, uri, {"roc_auc": 0.8}, {"run_id": "run-1"})
    assert again.version == first.version == 1
    other = lifecycle.register(
        stack, MODEL, store_artifact(stack, artifact_dir, "run-2"), {}, {"run_id": "run-2"}
    )
    assert other.version == 2
    assert [v.version for v in stack.registry.list_versions(MODEL)] == [1, 2]


# -- promote ---------------------------------------------------------------------------------
def test_promote_copies_an_approved_version_with_its_lineage(
    cloud: Cloud, stack: Stack, approved: Callable[[], ModelVersion], tmp_path: Path
) -> None:
    source = approved()
    staging = cloud.stack("staging")
    promoted = lifecycle.promote(stack, staging, MODEL, source.version)
    assert (promoted.version, promoted.status) == (1, PENDING)
    assert promoted.tags["promoted_from"] == f"{cloud.name}:dev:{MODEL}:v{source.version}"
    assert promoted.tags["source_artifact_uri"] == source.artifact_uri
    assert promoted.artifact_uri != source.artifact_uri
    copied = staging.store.get_artifact(promoted.artifact_uri, tmp_path / "copied")
    assert artifact.verify(copied) == artifact.verify(
        stack.store.get_artifact(source.artifact_uri, tmp_path / "source")
    )


def test_promoting_the_same_version_twice_gives_the_same_target_version(
    cloud: Cloud, stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    source = approved()
    staging = cloud.stack("staging")
    first = lifecycle.promote(stack, staging, MODEL, source.version)
    again = lifecycle.promote(stack, staging, MODEL, source.version, approve_in_target=True)
    assert again.version == first.version
    assert [v.version for v in staging.registry.list_versions(MODEL)] == [first.version]


def test_promoting_to_the_same_stack_is_refused(
    stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    source = approved()
    with pytest.raises(TandemError):
        lifecycle.promote(stack, stack, MODEL, source.version)
    assert stack.registry.list_versions(MODEL) == [source]


def test_only_an_approved_version_is_promoted(cloud: Cloud, stack: Stack, artifact_dir) -> None:
    uri = store_artifact(stack, artifact_dir, "run-1")
    pending = lifecycle.register(stack, MODEL, uri, {}, {})
    staging = cloud.stack("staging")
    with pytest.raises(TandemError, match="only an approved version"):
        lifecycle.promote(stack, staging, MODEL, pending.version)
    assert staging.registry.list_versions(MODEL) == []


# -- model names ---------------------------------------------------------------------------
ABSOLUTE = "<an absolute path>"
BAD_NAMES = ["../x", "../../../escape", ABSOLUTE, "Credit", "credit/../x", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_model_name_is_refused_at_every_entry_and_creates_nothing(
    cloud: Cloud, stack: Stack, artifact_dir: Path, name: str
) -> None:
    if name == ABSOLUTE:
        name = str(cloud.base / "elsewhere" / MODEL)
    uri = store_artifact(stack, artifact_dir, "run-1")
    before = cloud.footprint()
    entries = {
        "registry.create_version": lambda: stack.registry.create_version(name, uri, {}, {}),
        "registry.get_version": lambda: stack.registry.get_version(name, 1),
        "registry.list_versions": lambda: stack.registry.list_versions(name),
        "registry.set_status": lambda: stack.registry.set_status(name, 1, APPROVED),
        "lifecycle.register": lambda: lifecycle.register(stack, name, uri, {}, {}),
        "lifecycle.approve": lambda: lifecycle.approve(stack, name, 1),
        "lifecycle.reject": lambda: lifecycle.reject(stack, name, 1),
        "lifecycle.deploy": lambda: lifecycle.deploy(stack, name),
        "lifecycle.rollback": lambda: lifecycle.rollback(stack, name),
    }
    for entry, call in entries.items():
        with pytest.raises((ValueError, TandemError)):
            call()
        assert cloud.footprint() == before, f"{entry}({name!r}) left something behind"


# -- deploy, rollback, current, history ------------------------------------------------------
def test_nothing_deployed_yet(stack: Stack) -> None:
    assert stack.endpoint.current(MODEL) is None
    assert stack.endpoint.history(MODEL) == []
    with pytest.raises(NotFoundError, match="no approved version"):
        lifecycle.deploy(stack, MODEL)
    with pytest.raises(NotFoundError, match="not deployed"):
        lifecycle.rollback(stack, MODEL)


def test_deploy_takes_the_newest_approved_version_and_is_idempotent(
    stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    v1, v2 = approved(), approved()
    deployment = lifecycle.deploy(stack, MODEL)
    assert (deployment.model, deployment.version, deployment.artifact_uri) == (
        MODEL,
        v2.version,
        v2.artifact_uri,
    )
    assert deployment.canary_weight is None
    assert stack.endpoint.current(MODEL) == deployment
    assert lifecycle.deploy(stack, MODEL) == deployment  # the live version again: no change
    assert stack.endpoint.history(MODEL) == [deployment]
    older = lifecycle.deploy(stack, MODEL, v1.version)  # told a version, it takes that one
    assert stack.endpoint.current(MODEL) == older and older.version == v1.version
    assert [d.version for d in stack.endpoint.history(MODEL)] == [2, 1]


def test_only_approved_versions_deploy(stack: Stack, artifact_dir: Path) -> None:
    uri = store_artifact(stack, artifact_dir, "run-1")
    pending = lifecycle.register(stack, MODEL, uri, {}, {})
    with pytest.raises(TandemError, match="only approved versions deploy"):
        lifecycle.deploy(stack, MODEL, pending.version)
    with pytest.raises(NotFoundError, match="no approved version"):
        lifecycle.deploy(stack, MODEL)
    assert stack.endpoint.current(MODEL) is None


def test_rollback_archives_the_live_version_and_serves_the_previous_one(
    stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    v1, v2 = approved(), approved()
    lifecycle.deploy(stack, MODEL, v1.version)
    lifecycle.deploy(stack, MODEL, v2.version)
    back = lifecycle.rollback(stack, MODEL, "latency regression")
    assert (back.version, back.artifact_uri) == (v1.version, v1.artifact_uri)
    assert stack.endpoint.current(MODEL) == back
    archived = stack.registry.get_version(MODEL, v2.version)
    assert (archived.status, archived.status_reason) == (ARCHIVED, "latency regression")
    assert [d.version for d in stack.endpoint.history(MODEL)] == [1, 2, 1]
    # the archived version never goes live again: not as the champion, not by number
    assert lifecycle.deploy(stack, MODEL) == back
    with pytest.raises(TandemError, match="archived"):
        lifecycle.deploy(stack, MODEL, v2.version)
    with pytest.raises(NotFoundError, match="no approved version older"):
        lifecycle.rollback(stack, MODEL)
    assert stack.endpoint.current(MODEL) == back


def test_deploy_refuses_a_tampered_artifact_every_time(
    stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    v1 = approved()
    stack.store.put_bytes("artifacts/credit/run-1/model.onnx", b"not a model")
    for _ in range(2):  # a retry must not trust what the failed attempt left behind
        with pytest.raises(ArtifactIntegrityError, match=re.escape(artifact.ONNX)):
            lifecycle.deploy(stack, MODEL, v1.version)
    assert stack.endpoint.current(MODEL) is None
    assert stack.endpoint.history(MODEL) == []


# -- checks before any job starts -------------------------------------------------------------
TYPO_COLUMN = {"features": [{"name": "incme", "type": "numeric"}]}
BAD_PARAMETER = {"estimator": {"kind": "gradient_boosting", "params": {"n_estimator": 5}}}
BAD_VALUE = {"estimator": {"kind": "random_forest", "params": {"max_depth": -3}}}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (TYPO_COLUMN, r"missing column\(s\) \['incme'\]"),
        (BAD_PARAMETER, r"estimator\.params: \['n_estimator'\] not accepted by "),
        (BAD_VALUE, r"estimator\.params: .*max_depth"),
    ],
    ids=["typo-column", "bad-parameter", "bad-value"],
)
def test_a_bad_spec_fails_before_any_job_is_submitted(
    cloud: Cloud, stack: Stack, tmp_path: Path, overrides: dict, expected: str
) -> None:
    from ml import data
    from ml import train as training
    from ml.spec import parse_spec
    from tests.conftest import spec_dict

    spec = parse_spec(spec_dict(**overrides))
    before = cloud.footprint()
    with pytest.raises(TandemError, match=expected) as caller_side:
        lifecycle.train(stack, spec)
    assert cloud.footprint() == before  # no job, no run, no artifact, nothing staged
    if cloud.name == "aws":
        assert stack.jobs.sagemaker.list_training_jobs()["TrainingJobSummaries"] == []
    # the job's own entry point fails with the very same message
    with pytest.raises(TandemError) as in_the_job:
        training.fit(
            spec,
            data.load_frame(spec.dataset.source),
            tmp_path / "job",
            run_id="r",
            data_uri=spec.dataset.source,
        )
    assert str(in_the_job.value) == str(caller_side.value)
