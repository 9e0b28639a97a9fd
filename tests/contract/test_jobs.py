"""JobRunner: one training job, run where the stack runs jobs, gives a stored artifact and
its model card."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml import artifact
from ml.clouds.base import Stack
from ml.errors import TandemError
from ml.spec import parse_spec
from tests.conftest import CREDIT_SOURCE, spec_dict
from tests.contract.conftest import Cloud

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


def test_a_failed_job_raises_its_reason_and_stores_no_artifact(
    cloud: Cloud, stack: Stack, tmp_path: Path
) -> None:
    """The job checks the data itself too (a caller may skip the lifecycle's pre-check)."""
    if cloud.name == "aws":
        pytest.skip("moto completes every training job; its fake container plays only successes")
    from ml import datasets

    bad = tmp_path / "bad.csv"
    datasets.credit(rows=100, seed=1).drop(columns=["income"]).to_csv(bad, index=False)
    data_uri = stack.store.put_bytes("datasets/bad.csv", bad.read_bytes())
    spec = parse_spec(spec_dict(estimator=SMALL_MODEL))
    with pytest.raises(TandemError, match=r"failed: .*missing column\(s\) \['income'\]"):
        stack.jobs.run_training(spec, data_uri, "artifacts/credit/job-bad")
    assert not stack.store.exists("artifacts/credit/job-bad/MANIFEST.json")
