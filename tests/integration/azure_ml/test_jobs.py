"""AzureMLJobRunner against the Azure ML fake, which plays each command job by running its
command (the real `python -m ml.train`) over the stack's Blob store: the job Azure ML gets,
the artifact collected and verified, failures with Azure ML's reason, interruption."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ml.clouds.azure.common import AzureOutputs
from ml.clouds.azure.jobs import CODE_NAME, AzureMLJobRunner, job_name, job_path
from ml.clouds.base import Stack
from ml.errors import ConfigError
from ml.spec import parse_spec
from tests.azure_fakes import AzureFake
from tests.conftest import CREDIT_SOURCE, spec_dict
from tests.contract import test_jobs as conformance
from tests.integration.azure_ml import requests
from tests.integration.azure_ml.conftest import stack_of

CODES = "/codes/{name}/versions/{version}"
JOBS = "/jobs/{name}"


@pytest.fixture
def stack(outputs: dict, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("TANDEM_CODE_VERSION", "test-code-1")
    return stack_of(outputs, poll_seconds=0.05)


def puts(fake: AzureFake, ending: str) -> int:
    return sum(m == "PUT" and t.endswith(ending) for m, t in fake.operations())


def test_a_job_trains_where_the_stack_trains_and_its_artifact_is_stored(
    stack: Stack, cfg: AzureOutputs, fake: AzureFake, tmp_path: Path
) -> None:
    conformance.test_a_training_job_stores_its_artifact_and_returns_its_card(stack, tmp_path)
    name = job_name(cfg.name_prefix, "artifacts/credit/job-1")
    job = fake.job(name)["properties"]
    workspace = stack.jobs.arm.workspace_id
    assert job["jobType"] == "Command" and job["status"] == "Completed"
    assert job["command"].startswith("python -m ml.train --spec specs/credit.json")
    assert job["codeId"].startswith(f"{workspace}/codes/{CODE_NAME}/versions/")  # a bare ARM id
    assert job["computeId"] == f"{workspace}/computes/{cfg.compute_name}"
    assert job["environmentId"] == f"{workspace}/environments/tandem-training/versions/1"
    assert job["identity"] == {
        "identityType": "Managed",
        "clientId": cfg.training_identity_client_id,
    }
    assert job["experimentName"] == f"{cfg.name_prefix}-credit"
    assert job["environmentVariables"]["TANDEM_CODE_VERSION"] == "test-code-1"
    staged = job["inputs"]["data"]
    assert staged["jobInputType"] == "uri_file"
    assert staged["uri"].startswith(stack.store.uri_for("datasets/credit/"))
    assert job["outputs"]["model"] == {
        "jobOutputType": "uri_folder",
        "mode": "Upload",
        "uri": stack.store.uri_for("artifacts/credit/job-1/output") + "/",
    }
    # the code went through the store, as the job's code asset
    shipped = stack.store.list_keys("artifacts/credit/job-1/code/")
    assert "artifacts/credit/job-1/code/ml/train.py" in shipped
    assert "artifacts/credit/job-1/code/specs/credit.json" in shipped
    # unchanged code is shipped once
    spec = parse_spec(spec_dict(estimator=conformance.SMALL_MODEL))
    assert stack.jobs.ship_code(spec, "artifacts/credit/job-2") == job["codeId"]
    assert stack.store.list_keys("artifacts/credit/job-2/") == []
    assert puts(fake, CODES) == 1
    assert set(fake.operations()) == requests.JOBS
    assert fake.unanswered() == []


def test_a_failed_job_raises_azure_mls_reason(
    stack: Stack, fake: AzureFake, tmp_path: Path
) -> None:
    conformance.test_a_failed_job_raises_its_reason_and_stores_no_artifact(
        SimpleNamespace(name="azure"), stack, tmp_path
    )
    assert set(fake.operations()) == requests.JOBS | requests.JOB_FAILED


def test_a_missing_environment_is_named_before_any_job(outputs: dict, fake: AzureFake) -> None:
    stack = stack_of(outputs | {"training_environment": "azureml:tandem-training:99"})
    spec = parse_spec(spec_dict(estimator=conformance.SMALL_MODEL))
    with pytest.raises(ConfigError, match=r"environment tandem-training:99 .* does not exist"):
        stack.jobs.run_training(spec, CREDIT_SOURCE, "artifacts/credit/job-1")
    assert puts(fake, JOBS) == 0


def test_an_interrupted_caller_cancels_its_job_and_stores_nothing(
    outputs: dict, cfg: AzureOutputs, fake: AzureFake
) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    stack = stack_of(outputs, sleep=interrupted)
    spec = parse_spec(spec_dict(estimator=conformance.SMALL_MODEL))
    with pytest.raises(KeyboardInterrupt):
        stack.jobs.run_training(spec, CREDIT_SOURCE, "artifacts/credit/job-1")
    name = job_name(cfg.name_prefix, "artifacts/credit/job-1")
    assert set(fake.operations()) == requests.JOBS | requests.JOB_CANCELED
    assert fake.wait_job(name) == "Canceled"
    assert not stack.store.exists("artifacts/credit/job-1/MANIFEST.json")


def test_a_retried_submission_follows_the_job_it_started(
    stack: Stack, cfg: AzureOutputs, fake: AzureFake
) -> None:
    spec = parse_spec(spec_dict(estimator=conformance.SMALL_MODEL))
    runner: AzureMLJobRunner = stack.jobs  # type: ignore[assignment]
    first = runner.submit(spec, CREDIT_SOURCE, "artifacts/credit/job-1")
    lines: list[str] = []
    assert (
        runner.submit(spec, CREDIT_SOURCE, "artifacts/credit/job-1", progress=lines.append) == first
    )
    assert puts(fake, JOBS) == 1
    assert "already submitted" in lines[0]
    runner.stop(first)
    fake.wait_job(first)


def test_train_knows_an_azure_ml_run_by_its_run_id_not_by_azure_ai_mls_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """azure-ai-ml sets AZUREML_CURRENT_CLOUD in the process that imports it; a local job that
    process starts inherits it and must still train as a local run."""
    import argparse
    import os

    from ml import train

    for key in [k for k in os.environ if k.startswith(("SM_", "AZUREML_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "AzureCloud")
    names = ("spec", "data", "data_uri", "run_id", "model_dir", "param")
    args = argparse.Namespace(**dict.fromkeys(names))
    assert train.resolve_environment(args)[0] == "local"
    monkeypatch.setenv("AZUREML_RUN_ID", "tandem-dev-job-1")
    assert train.resolve_environment(args) == ("azureml", {})
    assert args.run_id == "tandem-dev-job-1"


def test_jobs_reach_the_storage_account_by_wasbs_paths() -> None:
    account = "https://tandemprodst01.blob.core.windows.net"
    assert job_path(f"{account}/prod-data/datasets/credit/ab.csv") == (
        "wasbs://prod-data@tandemprodst01.blob.core.windows.net/datasets/credit/ab.csv"
    )
    assert job_path(f"{account}/prod-models/artifacts/credit/r1/output/") == (
        "wasbs://prod-models@tandemprodst01.blob.core.windows.net/artifacts/credit/r1/output/"
    )
    azurite = "http://127.0.0.1:10000/devstoreaccount1/dev-data/datasets/x.csv"
    assert job_path(azurite) == azurite  # an emulator's address stays as it is
