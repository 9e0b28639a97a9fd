"""JobRunner: one training job, run where the stack runs jobs, gives a stored artifact and
its model card."""

from __future__ import annotations

from pathlib import Path

from ml import artifact
from ml.clouds.base import Stack
from ml.spec import parse_spec
from tests.conftest import CREDIT_SOURCE, spec_dict

SMALL_MODEL = {"kind": "gradient_boosting", "params": {"n_estimators": 20, "max_depth": 2}}


def test_a_training_job_stores_its_artifact_and_returns_its_card(
    stack: Stack, tmp_path: Path
) -> None:
    spec = parse_spec(spec_dict(estimator=SMALL_MODEL))
    lines: list[str] = []
    result = stack.jobs.run_training(
        spec, CREDIT_SOURCE, "artifacts/credit/job-1", progress=lines.append
    )
    assert result.status == "Completed" and result.job_id
    assert result.artifact_uri == stack.store.uri_for("artifacts/credit/job-1")
    assert lines  # the caller hears about progress
    stored = artifact.load(stack.store.get_artifact(result.artifact_uri, tmp_path / "a"))
    assert result.card == stored.card  # the card comes with the result: no second download
    assert result.card["spec"]["name"] == "credit"
    assert result.card["data"]["rows"] == 600
    assert result.card["code_version"] == "test-code-1"
