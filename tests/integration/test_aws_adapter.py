"""The AWS adapter against moto: a Stack built only from stack outputs.

Store (SSE-KMS, checksums, multipart, integrity, conflicts), registry (SageMaker versions
and statuses), metrics (batching, the alarm's dimension set), training jobs (the request
SageMaker gets, the container's output collected) and the Lambda endpoint (alias, canary,
rollback). Everything runs in-process except where a test says it also runs over HTTP.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from ml import artifact
from ml.clouds import connect
from ml.clouds.aws import (
    REQUIRED_OUTPUTS,
    SageMakerModelRegistry,
    composite_sha256,
)
from ml.clouds.base import MetricPoint, ModelVersion, Stack
from ml.errors import (
    ArtifactIntegrityError,
    ConfigError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    TandemError,
)
from tests.conftest import write_spec
from tests.integration.aws_fixtures import (
    FUNCTION_ENV,
    SKLEARN_IMAGE,
    FakeTrainingContainer,
    client,
    create_stack,
    fake_credentials,
    moto_backend,
)

SMALL_MODEL = {"kind": "gradient_boosting", "params": {"n_estimators": 20, "max_depth": 2}}


@pytest.fixture(params=["in-process"])
def endpoint_url(request, monkeypatch, tmp_path) -> Iterator[str | None]:
    """The moto backend; tests that must also run over real HTTP parametrize this."""
    fake_credentials(monkeypatch, tmp_path)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_backend(request.param) as url:
        yield url


both_backends = pytest.mark.parametrize("endpoint_url", ["in-process", "server"], indirect=True)


@pytest.fixture
def outputs(endpoint_url: str | None) -> dict[str, Any]:
    return create_stack("dev", endpoint_url=endpoint_url)


@pytest.fixture
def stack(outputs: dict[str, Any]) -> Stack:
    return connect("aws", outputs)


def calls(aws_client: Any, operation: str) -> list[dict[str, Any]]:
    """Record the parameters of every `operation` call the adapter's client makes."""
    seen: list[dict[str, Any]] = []
    service = aws_client.meta.service_model.service_name
    aws_client.meta.events.register(
        f"before-parameter-build.{service}.{operation}",
        lambda params, **_: seen.append(dict(params)),
    )
    return seen


def sealed_artifact(directory: Path, size: int = 2048) -> Path:
    """A sealed artifact whose model.onnx is `size` random bytes. The store, the registry
    and the endpoint only move and verify files, so no model needs training here."""
    directory.mkdir(parents=True)
    (directory / artifact.ONNX).write_bytes(os.urandom(size))
    (directory / artifact.CARD).write_text(json.dumps({"run_id": directory.name}) + "\n")
    (directory / artifact.BASELINE).write_text('{"features": {}}\n')
    artifact.seal(directory)
    return directory


@pytest.fixture
def artifact_copy(tmp_path: Path) -> Path:
    return sealed_artifact(tmp_path / "artifact")


def s3_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


# -- connect -------------------------------------------------------------------------------
def test_connect_builds_the_stack_from_outputs_alone(outputs: dict[str, Any]) -> None:
    stack = connect("aws", outputs)
    assert (stack.cloud, stack.name) == ("aws", "dev")
    assert stack.outputs == outputs
    assert stack.store.uri_for("runs/credit/r.json") == (
        f"s3://{outputs['models_bucket']}/runs/credit/r.json"
    )
    assert stack.store.uri_for("datasets/credit/d.parquet") == (
        f"s3://{outputs['data_bucket']}/datasets/credit/d.parquet"
    )


@pytest.mark.parametrize("missing", ["kms_key_arn", "model_package_groups", "function_alias"])
def test_missing_output_is_a_config_error_naming_it(missing: str) -> None:
    outputs = {key: f"value-of-{key}" for key in REQUIRED_OUTPUTS}
    outputs |= {"cloud": "aws", "model_package_groups": {"credit": "g"}, "alarm_names": []}
    del outputs[missing]
    with pytest.raises(ConfigError, match=repr(missing)):
        connect("aws", outputs)


def test_outputs_of_another_cloud_are_refused() -> None:
    outputs = {key: "x" for key in REQUIRED_OUTPUTS} | {"cloud": "azure"}
    with pytest.raises(ConfigError, match="not 'aws'"):
        connect("aws", outputs)


# -- artifact store ------------------------------------------------------------------------
@both_backends
def test_artifact_round_trip_encrypted_and_checksummed(
    stack: Stack, outputs: dict[str, Any], artifact_copy: Path, tmp_path: Path, endpoint_url
) -> None:
    uri = stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    assert uri == f"s3://{outputs['models_bucket']}/artifacts/credit/run-1"
    s3 = client("s3", endpoint_url)
    manifest = json.loads((artifact_copy / artifact.MANIFEST).read_text())["files"]
    for name in (*manifest, artifact.MANIFEST, artifact.TARBALL):
        head = s3.head_object(
            Bucket=outputs["models_bucket"],
            Key=f"artifacts/credit/run-1/{name}",
            ChecksumMode="ENABLED",
        )
        assert head["ServerSideEncryption"] == "aws:kms", name
        assert head["SSEKMSKeyId"] == outputs["kms_key_arn"], name
        assert head["ChecksumSHA256"], name
    fetched = stack.store.get_artifact(uri, tmp_path / "fetched")
    assert artifact.verify(fetched) == manifest
    for name in (*manifest, artifact.TARBALL):
        assert (fetched / name).read_bytes() == (artifact_copy / name).read_bytes()


def test_manifest_is_written_last(stack: Stack, artifact_copy: Path) -> None:
    puts = calls(stack.store.s3, "PutObject")
    stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    keys = [p["Key"].rsplit("/", 1)[-1] for p in puts]
    assert keys[-1] == artifact.MANIFEST
    assert puts[-1]["IfNoneMatch"] == "*"  # the first complete writer wins
    assert set(keys[:-1]) == {artifact.ONNX, artifact.CARD, artifact.BASELINE, artifact.TARBALL}


def test_put_artifact_is_idempotent(stack: Stack, artifact_copy: Path) -> None:
    first = stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    puts = calls(stack.store.s3, "PutObject")
    assert stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1/") == first
    assert puts == []  # verified in place, nothing sent again


def test_different_content_under_the_same_key_conflicts(
    stack: Stack, artifact_copy: Path, tmp_path: Path
) -> None:
    stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    other = tmp_path / "other"
    shutil.copytree(artifact_copy, other)
    (other / artifact.BASELINE).write_text('{"changed": true}\n')
    artifact.seal(other)
    with pytest.raises(ConflictError, match=r"baseline\.json"):
        stack.store.put_artifact(other, "artifacts/credit/run-1")
    fetched = stack.store.get_artifact(
        stack.store.uri_for("artifacts/credit/run-1"), tmp_path / "f"
    )
    assert (fetched / artifact.BASELINE).read_bytes() == (
        artifact_copy / artifact.BASELINE
    ).read_bytes()


def test_a_local_artifact_that_fails_its_manifest_sends_nothing(
    stack: Stack, artifact_copy: Path
) -> None:
    (artifact_copy / artifact.BASELINE).write_text("{}")
    with pytest.raises(ArtifactIntegrityError, match=r"baseline\.json"):
        stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    assert stack.store.list_keys("artifacts/") == []


def test_tampered_object_is_named_on_get(
    stack: Stack, outputs: dict[str, Any], artifact_copy: Path, tmp_path: Path
) -> None:
    uri = stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    s3 = client("s3")
    s3.put_object(
        Bucket=outputs["models_bucket"], Key="artifacts/credit/run-1/model.onnx", Body=b"evil"
    )
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
        stack.store.get_artifact(uri, tmp_path / "fetched")
    # and a re-put of the genuine artifact does not vouch for the tampered copy
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
        stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")


def test_a_listed_file_missing_from_s3_is_named(
    stack: Stack, outputs: dict[str, Any], artifact_copy: Path, tmp_path: Path
) -> None:
    uri = stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    client("s3").delete_object(
        Bucket=outputs["models_bucket"], Key="artifacts/credit/run-1/model_card.json"
    )
    with pytest.raises(ArtifactIntegrityError, match=r"model_card\.json.*missing"):
        stack.store.get_artifact(uri, tmp_path / "fetched")


def test_absent_keys_are_not_found(stack: Stack, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        stack.store.get_artifact(stack.store.uri_for("artifacts/credit/nope"), tmp_path)
    with pytest.raises(NotFoundError):
        stack.store.get_bytes("runs/credit/nope.json")
    assert stack.store.list_keys("runs/") == []


def test_keys_map_to_their_buckets(stack: Stack, outputs: dict[str, Any]) -> None:
    assert stack.store.put_bytes("datasets/credit/a.csv", b"a,b\n") == (
        f"s3://{outputs['data_bucket']}/datasets/credit/a.csv"
    )
    stack.store.put_bytes("runs/credit/r1.json", b"{}")
    stack.store.put_bytes("reports/credit/r1.html", b"<p>")
    assert stack.store.list_keys("runs/") == ["runs/credit/r1.json"]
    assert stack.store.list_keys("datasets/") == ["datasets/credit/a.csv"]
    assert stack.store.list_keys("") == [
        "datasets/credit/a.csv",
        "reports/credit/r1.html",
        "runs/credit/r1.json",
    ]
    assert stack.store.get_bytes(f"s3://{outputs['data_bucket']}/datasets/credit/a.csv") == b"a,b\n"


@both_backends
def test_multipart_above_the_threshold_is_verified_without_downloading(
    stack: Stack, outputs: dict[str, Any], tmp_path: Path, endpoint_url
) -> None:
    size = 9 * 1024 * 1024  # over the 8 MiB threshold: two parts
    local = sealed_artifact(tmp_path / "big", size)
    multipart = calls(stack.store.s3, "CreateMultipartUpload")
    gets = calls(stack.store.s3, "GetObject")
    uri = stack.store.put_artifact(local, "artifacts/credit/big")
    # model.onnx and the tarball of it are both over the threshold
    assert sorted(p["Key"] for p in multipart) == [
        "artifacts/credit/big/model.onnx",
        "artifacts/credit/big/model.tar.gz",
    ]
    assert multipart[0]["ChecksumAlgorithm"] == "SHA256"
    assert multipart[0]["SSEKMSKeyId"] == outputs["kms_key_arn"]
    # only the "is there a manifest already?" probe read anything back
    assert [p["Key"] for p in gets] == ["artifacts/credit/big/MANIFEST.json"]
    head = client("s3", endpoint_url).head_object(
        Bucket=outputs["models_bucket"],
        Key="artifacts/credit/big/model.onnx",
        ChecksumMode="ENABLED",
    )
    assert head["ETag"].strip('"').endswith("-2")
    assert head["ChecksumSHA256"].split("-")[0] == composite_sha256(
        local / artifact.ONNX, 8 * 1024 * 1024
    )
    fetched = stack.store.get_artifact(uri, tmp_path / "fetched")
    assert (fetched / artifact.ONNX).read_bytes() == (local / artifact.ONNX).read_bytes()


def test_stored_copy_without_checksum_is_read_back_and_compared(
    stack: Stack, outputs: dict[str, Any], tmp_path: Path
) -> None:
    local = sealed_artifact(tmp_path / "big", 9 * 1024 * 1024)
    stack.store.put_artifact(local, "artifacts/credit/big")
    tampered = bytearray((local / artifact.ONNX).read_bytes())
    tampered[-1] ^= 0xFF  # same size, one byte differs, written without a checksum
    client("s3").put_object(
        Bucket=outputs["models_bucket"], Key="artifacts/credit/big/model.onnx", Body=bytes(tampered)
    )
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx: stored sha256 differs"):
        stack.store.put_artifact(local, "artifacts/credit/big")


# -- registry ------------------------------------------------------------------------------
@pytest.fixture
def stored_uri(stack: Stack, artifact_copy: Path) -> str:
    return stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")


def test_versions_are_assigned_by_sagemaker_and_consecutive(
    stack: Stack, outputs: dict[str, Any], stored_uri: str
) -> None:
    created = [
        stack.registry.create_version(
            "credit", stored_uri, {"roc_auc": 0.8 + i / 100}, {"run_id": f"r{i}"}
        )
        for i in range(3)
    ]
    assert [v.version for v in created] == [1, 2, 3]
    assert all(v.status == "pending" for v in created)
    sagemaker = client("sagemaker")
    group = outputs["model_package_groups"]["credit"]
    packages = sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert sorted(p["ModelPackageVersion"] for p in packages) == [1, 2, 3]
    described = sagemaker.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    container = described["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == outputs["training_image_uri"]
    assert container["ModelDataUrl"] == f"{stored_uri}/model.tar.gz"
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == (
        f"{stored_uri}/model_card.json"
    )
    record = json.loads(stack.store.get_bytes("registry/credit/v2.json"))
    assert record["artifact_uri"] == stored_uri
    assert record["metrics"] == {"roc_auc": 0.81}
    assert record["tags"] == {"run_id": "r1"}
    got = stack.registry.get_version("credit", 2)
    assert (got.metrics, got.tags, got.artifact_uri) == (
        {"roc_auc": 0.81},
        {"run_id": "r1"},
        stored_uri,
    )
    assert [v.version for v in stack.registry.list_versions("credit")] == [1, 2, 3]
    assert stack.registry.list_models() == ["credit"]


def test_status_mapping_and_transitions(
    stack: Stack, outputs: dict[str, Any], stored_uri: str
) -> None:
    registry = stack.registry
    for _ in range(3):
        registry.create_version("credit", stored_uri, {}, {})
    sagemaker = client("sagemaker")

    def sagemaker_status(version: int) -> dict[str, Any]:
        group = outputs["model_package_groups"]["credit"]
        arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/{version}"
        return sagemaker.describe_model_package(ModelPackageName=arn)

    assert registry.set_status("credit", 1, "approved", "gates passed").status == "approved"
    assert sagemaker_status(1)["ModelApprovalStatus"] == "Approved"
    assert registry.set_status("credit", 2, "rejected", "auc too low").status == "rejected"
    assert sagemaker_status(2)["ModelApprovalStatus"] == "Rejected"
    with pytest.raises(InvalidTransitionError, match="pending to archived"):
        registry.set_status("credit", 3, "archived")
    with pytest.raises(InvalidTransitionError, match="rejected to approved"):
        registry.set_status("credit", 2, "approved")
    with pytest.raises(InvalidTransitionError, match="unknown status"):
        registry.set_status("credit", 3, "live")
    # same status: a no-op, the reason kept
    assert registry.set_status("credit", 1, "approved", "again").status_reason == "gates passed"

    archived = registry.set_status("credit", 1, "archived", "rolled back")
    assert (archived.status, archived.status_reason) == ("archived", "rolled back")
    described = sagemaker_status(1)
    assert described["ModelApprovalStatus"] == "Rejected"  # nothing SageMaker-native deploys it
    assert described["ApprovalDescription"] == "rolled back"
    with pytest.raises(InvalidTransitionError, match="archived to approved"):
        registry.set_status("credit", 1, "approved")
    statuses = [(v.version, v.status, v.status_reason) for v in registry.list_versions("credit")]
    assert statuses == [
        (1, "archived", "rolled back"),
        (2, "rejected", "auc too low"),
        (3, "pending", ""),
    ]
    assert json.loads(stack.store.get_bytes("registry/credit/v1.json"))["status"] == "archived"


def test_sagemaker_is_the_source_of_truth_for_status(
    stack: Stack, outputs: dict[str, Any], stored_uri: str
) -> None:
    stack.registry.create_version("credit", stored_uri, {}, {})
    group = outputs["model_package_groups"]["credit"]
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/1"
    # approved in SageMaker directly (console, another tool): the record still says pending
    client("sagemaker").update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    assert stack.registry.get_version("credit", 1).status == "approved"


def test_a_version_without_its_record_still_reads(
    stack: Stack, outputs: dict[str, Any], stored_uri: str
) -> None:
    stack.registry.create_version("credit", stored_uri, {"roc_auc": 0.9}, {"run_id": "r"})
    client("s3").delete_object(Bucket=outputs["models_bucket"], Key="registry/credit/v1.json")
    version = stack.registry.get_version("credit", 1)
    assert version.artifact_uri == stored_uri  # from the package's metadata / ModelDataUrl
    assert version.status == "pending"


def test_unknown_models_and_versions(stack: Stack, stored_uri: str) -> None:
    with pytest.raises(NotFoundError, match=r"'fraud'.*configured: credit"):
        stack.registry.create_version("fraud", stored_uri, {}, {})
    with pytest.raises(NotFoundError, match="configured: credit"):
        stack.registry.get_version("fraud", 1)
    assert stack.registry.list_versions("fraud") == []
    with pytest.raises(NotFoundError, match="no version 7"):
        stack.registry.get_version("credit", 7)
    assert stack.registry.list_models() == []


def test_metadata_respects_sagemaker_limits(stack: Stack, stored_uri: str) -> None:
    registry = stack.registry
    assert isinstance(registry, SageMakerModelRegistry)
    sent = calls(registry.sagemaker, "CreateModelPackage")
    metrics = {f"m{i}": float(i) for i in range(60)}
    tags = {"long": "x" * 1000, "odd key!": "v"}
    registry.create_version("credit", stored_uri, metrics, tags)
    properties = sent[0]["CustomerMetadataProperties"]
    assert len(properties) <= 50
    assert all(1 <= len(v) <= 256 and 1 <= len(k) <= 128 for k, v in properties.items())
    assert registry.get_version("credit", 1).metrics == metrics  # the record holds them all
    assert registry.get_version("credit", 1).tags == tags


# -- metrics -------------------------------------------------------------------------------
def test_metrics_are_batched_and_copied_to_the_alarm_dimensions(
    stack: Stack, outputs: dict[str, Any]
) -> None:
    sink = stack.metrics
    sent = calls(sink.cloudwatch, "PutMetricData")
    points = [
        MetricPoint(
            "model_quality",
            0.5 + (i % 10) / 100,
            {"Model": "credit", "Version": str(1 + i % 2)},
            timestamp="2026-11-27T09:00:00+00:00",
        )
        for i in range(2500)
    ]
    sink.emit(points)
    # 2500 points with a Version: 5000 metrics, at most 1000 per request
    assert [len(call["MetricData"]) for call in sent] == [1000] * 5
    assert all(call["Namespace"] == "Tandem" for call in sent)
    cloudwatch = client("cloudwatch")
    listed = cloudwatch.list_metrics(Namespace="Tandem", MetricName="model_quality")["Metrics"]
    # (moto lists a metric once per data point; CloudWatch once per dimension set)
    dimension_sets = sorted(
        {tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in listed}
    )
    assert dimension_sets == [
        (("Model", "credit"),),
        (("Model", "credit"), ("Version", "1")),
        (("Model", "credit"), ("Version", "2")),
    ]
    # the {Model} copy is exactly the series the stack's quality alarm watches
    alarm = cloudwatch.describe_alarms(AlarmNames=["tandem-dev-credit-quality"])["MetricAlarms"][0]
    assert alarm["Dimensions"] == [{"Name": "Model", "Value": "credit"}]
    model_only = [
        d for call in sent for d in call["MetricData"] if d["Dimensions"] == alarm["Dimensions"]
    ]
    assert len(model_only) == 2500
    assert math.isclose(sum(d["Value"] for d in model_only), sum(p.value for p in points))
    stats = cloudwatch.get_metric_statistics(
        Namespace="Tandem",
        MetricName="model_quality",
        Dimensions=[{"Name": "Model", "Value": "credit"}, {"Name": "Version", "Value": "2"}],
        StartTime=datetime(2026, 11, 27, 8, tzinfo=UTC),
        EndTime=datetime(2026, 11, 27, 10, tzinfo=UTC),
        Period=3600,
        Statistics=["SampleCount", "Sum", "Minimum"],
    )["Datapoints"]
    version_2 = [p.value for p in points if p.dimensions["Version"] == "2"]
    assert stats[0]["SampleCount"] == len(version_2) == 1250
    assert math.isclose(stats[0]["Sum"], sum(version_2))
    assert stats[0]["Minimum"] == min(version_2)


def test_a_bad_point_sends_nothing(stack: Stack) -> None:
    sent = calls(stack.metrics.cloudwatch, "PutMetricData")
    good = [MetricPoint("drift_score", 0.1, {"Model": "credit"}) for _ in range(1500)]
    with pytest.raises(TandemError, match="refuses the value nan"):
        stack.metrics.emit([*good, MetricPoint("drift_score", float("nan"), {"Model": "credit"})])
    with pytest.raises(TandemError, match="not a CloudWatch unit"):
        stack.metrics.emit([MetricPoint("drift_score", 1.0, {"Model": "credit"}, unit="Furlongs")])
    assert sent == []
    stack.metrics.emit([])
    assert sent == []


# -- training jobs -------------------------------------------------------------------------
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
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
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
    assert hyper["spec"] == "specs/spec.toml"
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
    assert {"ml/train.py", "deploy/inference.py", "specs/spec.toml"} <= set(
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
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
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
    assert code["specs/spec.toml"] == spec.read_bytes()
    assert "ml/clouds/aws/__init__.py" in code and not any("__pycache__" in n for n in code)


def test_dataset_is_staged_once_by_content(stack: Stack, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
    first = stack.jobs.stage_dataset("synthetic://credit?rows=600&seed=3", spec)
    puts = calls(stack.store.s3, "PutObject")
    assert stack.jobs.stage_dataset("synthetic://credit?rows=600&seed=3", spec) == first
    assert puts == []
    assert stack.jobs.stage_dataset("synthetic://credit?rows=601&seed=3", spec) != first


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


# -- serving -------------------------------------------------------------------------------
@pytest.fixture
def approved(stack: Stack, tmp_path: Path) -> Callable[[], ModelVersion]:
    """`approved()` registers and approves one more version, each with its own artifact."""

    def make() -> ModelVersion:
        n = len(stack.registry.list_versions("credit")) + 1
        local = sealed_artifact(tmp_path / f"artifact-{n}")
        uri = stack.store.put_artifact(local, f"artifacts/credit/run-{n}")
        version = stack.registry.create_version("credit", uri, {}, {"run_id": f"run-{n}"})
        return stack.registry.set_status("credit", version.version, "approved")

    return make


def lambda_state(outputs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    lam = client("lambda")
    alias = lam.get_alias(FunctionName=outputs["function_name"], Name="live")
    versions = {
        v["Version"]: v
        for v in lam.list_versions_by_function(FunctionName=outputs["function_name"])["Versions"]
    }
    return alias, versions


def test_deploy_sets_model_uri_publishes_and_moves_the_alias(
    stack: Stack, outputs: dict[str, Any], approved
) -> None:
    v1 = approved()
    deployment = stack.endpoint.deploy(v1)
    alias, versions = lambda_state(outputs)
    published = deployment.details["function_version"]
    assert alias["FunctionVersion"] == published != "1"
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    env = versions[published]["Environment"]["Variables"]
    assert env == {
        **FUNCTION_ENV,
        "MODEL_URI": v1.artifact_uri,
        "MODEL_NAME": "credit",
        "MODEL_VERSION": "1",
    }
    assert versions[published]["Description"].startswith("credit:v1 ")
    assert deployment.endpoint == outputs["function_url"]
    assert stack.endpoint.current("credit") == deployment
    assert stack.endpoint.history("credit") == [deployment]
    # idempotent: the live version again changes nothing
    publishes = calls(stack.endpoint.client, "PublishVersion")
    assert stack.endpoint.deploy(v1) == deployment
    assert publishes == [] and len(stack.endpoint.history("credit")) == 1
    assert stack.endpoint.current("fraud") is None and stack.endpoint.history("fraud") == []


def test_canary_keeps_the_live_version_primary(
    stack: Stack, outputs: dict[str, Any], approved
) -> None:
    v1, v2 = approved(), approved()
    with pytest.raises(TandemError, match="canary needs another live version"):
        stack.endpoint.deploy(v1, canary_weight=0.1)
    first = stack.endpoint.deploy(v1)
    with pytest.raises(TandemError, match="between 0 and 1"):
        stack.endpoint.deploy(v2, canary_weight=1.0)
    canary = stack.endpoint.deploy(v2, canary_weight=0.2)
    alias, versions = lambda_state(outputs)
    new = canary.details["function_version"]
    # Lambda semantics: FunctionVersion takes the rest, AdditionalVersionWeights the canary
    assert alias["FunctionVersion"] == first.details["function_version"]
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {new: 0.2}
    assert versions[new]["Environment"]["Variables"]["MODEL_URI"] == v2.artifact_uri
    assert (canary.version, canary.canary_weight) == (2, 0.2)
    assert canary.details["primary_model_version"] == "1"
    assert stack.endpoint.deploy(v2, canary_weight=0.2) == canary  # idempotent too
    # promote the canary to all traffic: same Lambda version, nothing published
    full = stack.endpoint.deploy(v2)
    alias, after = lambda_state(outputs)
    assert alias["FunctionVersion"] == new
    assert not alias["RoutingConfig"]["AdditionalVersionWeights"]
    assert full.details["published"] == "false" and set(after) == set(versions)
    assert [d.version for d in stack.endpoint.history("credit")] == [1, 2, 2]


def test_rollback_re_points_the_alias_without_publishing(
    stack: Stack, outputs: dict[str, Any], approved
) -> None:
    from ml import lifecycle

    v1, v2 = approved(), approved()
    first = stack.endpoint.deploy(v1)
    stack.endpoint.deploy(v2)
    _, before = lambda_state(outputs)
    back = lifecycle.rollback(stack, "credit", "latency regression")
    alias, after = lambda_state(outputs)
    assert back.version == 1
    assert alias["FunctionVersion"] == first.details["function_version"]
    assert back.details["published"] == "false"
    assert set(after) == set(before)  # no new Lambda version
    assert stack.registry.get_version("credit", 2).status == "archived"
    assert stack.endpoint.current("credit").version == 1


def test_deploy_refuses_a_tampered_artifact(
    stack: Stack, outputs: dict[str, Any], approved
) -> None:
    v1 = approved()
    bucket, key = s3_key(v1.artifact_uri)
    client("s3").put_object(Bucket=bucket, Key=f"{key}/model.onnx", Body=b"not a model")
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
        stack.endpoint.deploy(v1)
    alias, _ = lambda_state(outputs)
    assert alias["FunctionVersion"] == "1"
    assert stack.endpoint.current("credit") is None


def test_deploy_waits_for_the_function_update_and_reports_its_failure(
    stack: Stack, approved
) -> None:
    # moto finishes every update at once; Lambda takes a while and can fail
    v1 = approved()
    ticks: list[float] = []
    stack.endpoint.sleep = ticks.append
    name = stack.endpoint.function_name
    conf = {"FunctionName": name, "State": "Active", "RevisionId": "rev-1"}
    env = {"Environment": {"Variables": {"LOG_LEVEL": "INFO"}}}
    with Stubber(stack.endpoint.client) as stub:
        stub.add_response(
            "get_alias", {"Name": "live", "FunctionVersion": "1", "RevisionId": "alias-rev"}
        )
        stub.add_response("list_versions_by_function", {"Versions": []})
        stub.add_response("get_function_configuration", {**conf, "LastUpdateStatus": "InProgress"})
        stub.add_response(
            "get_function_configuration", {**conf, **env, "LastUpdateStatus": "Successful"}
        )
        stub.add_response(
            "update_function_configuration",
            {"FunctionName": name, "LastUpdateStatus": "InProgress"},
            {
                "FunctionName": name,
                "Environment": {
                    "Variables": {
                        "LOG_LEVEL": "INFO",
                        "MODEL_URI": v1.artifact_uri,
                        "MODEL_NAME": "credit",
                        "MODEL_VERSION": "1",
                    }
                },
                "RevisionId": "rev-1",  # a concurrent change makes Lambda refuse the update
            },
        )
        stub.add_response(
            "get_function_configuration",
            {
                **conf,
                "LastUpdateStatus": "Failed",
                "LastUpdateStatusReason": "KMS key is disabled",
            },
        )
        with pytest.raises(TandemError, match="failed: KMS key is disabled"):
            stack.endpoint.deploy(v1)
        stub.assert_no_pending_responses()
    assert ticks == [stack.endpoint.poll_seconds]
    assert stack.endpoint.current("credit") is None
