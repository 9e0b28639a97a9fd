"""SageMakerJobRunner against moto: the request SageMaker gets, the training container's
output collected (FakeTrainingContainer runs the image's real entry point), failures.
"""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from infra.aws.names import AwsNames
from infra.aws.policies import mlflow_tracking_server_arn
from ml import artifact
from ml.clouds import connect, packaging
from ml.clouds.base import Stack
from ml.errors import TandemError
from ml.spec import load_spec
from tests.conftest import write_spec
from tests.integration.aws_fixtures import (
    ACCOUNT,
    SKLEARN_IMAGE,
    FakeTrainingContainer,
    calls,
    client,
    create_stack,
    s3_key,
)

SMALL_MODEL = {"kind": "gradient_boosting", "params": {"n_estimators": 20, "max_depth": 2}}


def sourcedir(
    outputs: dict[str, Any], uri: str, endpoint_url: str | None = None
) -> dict[str, bytes]:
    bucket, key = s3_key(uri)
    body = client("s3", endpoint_url).get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_training_job_runs_in_the_container_and_is_collected(
    stack: Stack, outputs: dict[str, Any], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TANDEM_CODE_VERSION", "test-code-1")
    container = FakeTrainingContainer()
    stack.jobs.after_submit = container
    stack.jobs.sleep = lambda seconds: None
    lines: list[str] = []
    requests = calls(stack.jobs.sagemaker, "CreateTrainingJob")
    spec = load_spec(write_spec(tmp_path, estimator=SMALL_MODEL))
    result = stack.jobs.run_training(
        spec, "synthetic://credit?rows=600&seed=3", "artifacts/credit/run-7", progress=lines.append
    )
    # what moto does not keep: the container's environment and the job's tags
    assert requests[0]["Environment"] == {"TANDEM_CODE_VERSION": "test-code-1"}
    assert {"Key": "tandem:model", "Value": "credit"} in requests[0]["Tags"]
    job = container.jobs[0]["job"]
    name = "tandem-dev-run-7"
    assert result.job_id == name and result.status == "Completed"
    assert result.artifact_uri == f"s3://{outputs['models_bucket']}/artifacts/credit/run-7"
    assert name in result.logs_uri
    assert any("Completed" in line for line in lines)

    # what SageMaker was asked to run
    hyper = {k: json.loads(v) for k, v in job["HyperParameters"].items()}
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]
    }
    data_uri = channels["train"]
    assert data_uri.startswith(f"s3://{outputs['data_bucket']}/datasets/credit/")
    assert data_uri.endswith(".parquet")
    assert hyper["spec"] == "specs/credit.json"
    assert hyper["data_uri"] == data_uri
    assert hyper["sagemaker_program"] == "ml/train.py"
    assert job["EnableNetworkIsolation"] is True  # a purpose-built image needs no pip
    assert hyper["sagemaker_submit_directory"] == "/opt/ml/input/data/code/sourcedir.tar.gz"
    assert channels["code"] == f"{result.artifact_uri}/code/sourcedir.tar.gz"
    assert job["AlgorithmSpecification"]["TrainingImage"] == outputs["training_image_uri"]
    assert job["RoleArn"] == outputs["sagemaker_role_arn"]
    assert job["OutputDataConfig"] == {
        "S3OutputPath": f"{result.artifact_uri}/output",
        "KmsKeyId": outputs["kms_key_arn"],
    }
    assert job["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert job["ResourceConfig"]["VolumeKmsKeyId"] == outputs["kms_key_arn"]
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] > 0
    assert {"ml/train.py", "deploy/inference.py", "contract/naming.py", "specs/credit.json"} <= set(
        container.jobs[0]["files"]
    )
    assert "requirements.txt" not in container.jobs[0]["files"]

    # what came back: the container's artifact, verified and stored under the output key
    card = artifact.load(stack.store.get_artifact(result.artifact_uri, tmp_path / "a")).card
    assert card["environment"] == "sagemaker"
    assert card["run_id"] == name
    assert card["data"]["uri"] == data_uri  # the lifecycle can read these rows again
    assert card["data"]["rows"] == 600
    assert card["code_version"] == "test-code-1"


def test_stock_sklearn_image_gets_its_code_from_s3_with_requirements(
    endpoint_url: str | None, tmp_path: Path
) -> None:
    outputs = create_stack("dev", endpoint_url=endpoint_url, training_image_uri=SKLEARN_IMAGE)
    stack = connect("aws", outputs)
    spec = load_spec(write_spec(tmp_path, estimator=SMALL_MODEL))
    data = stack.store.put_bytes("datasets/credit/given.csv", b"a,b\n1,2\n")
    name = stack.jobs.submit(spec, data, "artifacts/credit/run-8")
    job = client("sagemaker").describe_training_job(TrainingJobName=name)
    hyper = {k: json.loads(v) for k, v in job["HyperParameters"].items()}
    assert job["EnableNetworkIsolation"] is False  # pip needs the network
    assert [c["ChannelName"] for c in job["InputDataConfig"]] == ["train"]
    assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == data  # as given
    code = sourcedir(outputs, hyper["sagemaker_submit_directory"])
    requirements = code["requirements.txt"].decode().split()
    assert any(r.startswith("scikit-learn") for r in requirements)
    assert not any("boto3" in r or "pytest" in r for r in requirements)  # runtime only
    assert code["specs/credit.json"] == packaging.spec_bytes(spec)
    assert "ml/clouds/aws/__init__.py" in code and not any("__pycache__" in n for n in code)


def test_dataset_is_staged_once_by_content(stack: Stack, tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, estimator=SMALL_MODEL))
    first = packaging.stage_dataset(stack.store, spec, "synthetic://credit?rows=600&seed=3")
    puts = calls(stack.store.s3, "PutObject")
    assert packaging.stage_dataset(stack.store, spec, "synthetic://credit?rows=600&seed=3") == first
    assert puts == []
    assert packaging.stage_dataset(stack.store, spec, "synthetic://credit?rows=601&seed=3") != first


def test_a_failed_job_raises_with_its_reason(stack: Stack) -> None:
    ticks: list[float] = []
    stack.jobs.sleep = ticks.append
    stack.jobs.poll_seconds = 7
    lines: list[str] = []
    with Stubber(stack.jobs.sagemaker) as stub:
        for status, secondary in (("InProgress", "Training"), ("InProgress", "Training")):
            stub.add_response(
                "describe_training_job",
                _job_description("job-1", status, secondary),
                {"TrainingJobName": "job-1"},
            )
        failed = _job_description("job-1", "Failed", "Failed")
        failed["FailureReason"] = "AlgorithmError: missing column(s) ['income']"
        stub.add_response("describe_training_job", failed, {"TrainingJobName": "job-1"})
        with pytest.raises(TandemError, match=r"job-1 failed: AlgorithmError: missing column"):
            stack.jobs.wait("job-1", progress=lines.append)
    assert ticks == [7, 7]
    assert lines == ["job job-1: InProgress (Training)", "job job-1: Failed (Failed)"]


def _job_description(name: str, status: str, secondary: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {},
        "CreationTime": datetime(2026, 11, 27, tzinfo=UTC),
    }


def _with_tracking_server(outputs: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The outputs of the same stack with `tandem:aws.mlflow` on (its server's ARN exported)."""
    names = AwsNames(outputs["name_prefix"])
    arn = mlflow_tracking_server_arn(outputs["region"], ACCOUNT, names.mlflow_server)
    return {**outputs, "mlflow_tracking_server_arn": arn}, arn


@pytest.mark.parametrize("tracking_server", [True, False], ids=["mlflow-on", "mlflow-off"])
def test_a_job_with_network_logs_to_the_stacks_tracking_server(
    tracking_server: bool, endpoint_url: str | None, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TANDEM_CODE_VERSION", "test-code-1")
    outputs = create_stack("dev", endpoint_url=endpoint_url, training_image_uri=SKLEARN_IMAGE)
    arn = None
    if tracking_server:
        outputs, arn = _with_tracking_server(outputs)
    stack = connect("aws", outputs)
    requests = calls(stack.jobs.sagemaker, "CreateTrainingJob")
    spec = load_spec(write_spec(tmp_path, estimator=SMALL_MODEL))
    data = stack.store.put_bytes("datasets/credit/given.csv", b"a,b\n1,2\n")
    name = stack.jobs.submit(spec, data, "artifacts/credit/run-9")

    assert requests[0]["EnableNetworkIsolation"] is False
    expected = {"TANDEM_CODE_VERSION": "test-code-1"}
    if arn:
        expected["MLFLOW_TRACKING_URI"] = arn
    assert requests[0]["Environment"] == expected
    assert stack.tracking_uri == arn  # the lifecycle's own mirror calls use it too
    hyper = {
        k: json.loads(v)
        for k, v in client("sagemaker")
        .describe_training_job(TrainingJobName=name)["HyperParameters"]
        .items()
    }
    requirements = sourcedir(outputs, hyper["sagemaker_submit_directory"])["requirements.txt"]
    # the job installs what logging to the server needs: the [mlflow] extra
    assert any(r.startswith("mlflow") for r in requirements.decode().split()) == tracking_server


def test_a_network_isolated_job_is_not_told_the_tracking_server(
    endpoint_url: str | None, tmp_path: Path
) -> None:
    """Tandem's own image runs isolated: the job cannot reach the tracking server, so it is
    not told; the lifecycle (caller side) mirrors the run from the stored artifact."""
    outputs, arn = _with_tracking_server(create_stack("dev", endpoint_url=endpoint_url))
    stack = connect("aws", outputs)
    requests = calls(stack.jobs.sagemaker, "CreateTrainingJob")
    spec = load_spec(write_spec(tmp_path, estimator=SMALL_MODEL))
    stack.jobs.submit(spec, "synthetic://credit?rows=200&seed=3", "artifacts/credit/run-10")
    assert requests[0]["EnableNetworkIsolation"] is True
    assert "MLFLOW_TRACKING_URI" not in requests[0]["Environment"]
    assert stack.tracking_uri == arn
