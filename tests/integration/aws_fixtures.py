"""AWS test doubles: a stack created in moto as the Pulumi program creates it, both moto
backends (in-process and a real HTTP endpoint), and a stand-in for SageMaker's side of a
training job.

moto accepts `CreateTrainingJob` but runs nothing: it reports the job Completed with an
`S3ModelArtifacts` path where no file exists. `FakeTrainingContainer` does SageMaker's
part with the job's own request (download the channels, write `hyperparameters.json`,
start the image's entry point, upload `model.tar.gz`) and runs Tandem's real entry point
(`deploy/training/entrypoint.py`) for the container's part, so the adapter is exercised at
its boundary and never patched.
"""

from __future__ import annotations

import functools
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.session
import moto  # noqa: F401  (moto hooks into every botocore client built after this import)
import pytest
from botocore.config import Config

from ml import artifact

REPO = Path(__file__).resolve().parents[2]
TRAINING_ENTRYPOINT = REPO / "deploy" / "training" / "entrypoint.py"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
MODELS = ("credit", "churn")  # two models: two functions, two roles
TRAINING_IMAGE_TAG = SERVING_IMAGE_TAG = "0.1.0"
SKLEARN_IMAGE = f"683313688378.dkr.ecr.{REGION}.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
HANDLER = "deploy.aws_lambda.handler.handler"
FUNCTION_ENV = {"LOG_LEVEL": "INFO", "POWERTOOLS_SERVICE_NAME": "tandem"}

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake keys only, and no shared config: nothing here can reach a real account."""
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_backend(kind: str) -> Iterator[str | None]:
    """`in-process` (moto.mock_aws; yields None) or `server` (ThreadedMotoServer on
    127.0.0.1 and a free port; yields its URL for the `endpoint_url` output)."""
    if kind == "in-process":
        from moto import mock_aws

        with mock_aws():
            yield None
        return
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        # the server's backends are process-wide: start from an empty account
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
        yield url
    finally:
        server.stop()


@functools.cache
def _model_loader() -> Any:
    # moto drops boto3's default session on every start; keep the parsed service models
    return botocore.session.get_session().get_component("data_loader")


def client(service: str, endpoint_url: str | None = None) -> Any:
    """A client of the test's own (not the adapter's) session, on the moto backend.

    Shared by every test with the same credentials and endpoint: building a client costs
    about 0.1 s, and a stack takes eight. moto's hook is in every client, and it answers
    for whichever mock is running."""
    credentials = tuple(os.environ.get(key) for key in sorted(FAKE_CREDENTIALS))
    return _client(service, endpoint_url, credentials)


@functools.cache
def _client(service: str, endpoint_url: str | None, credentials: tuple) -> Any:
    core = botocore.session.get_session()
    core.register_component("data_loader", _model_loader())
    session = boto3.session.Session(botocore_session=core, region_name=REGION)
    config = Config(s3={"addressing_style": "path"}) if endpoint_url else None
    return session.client(service, endpoint_url=endpoint_url, config=config)


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": f"{service}.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


@functools.cache
def _function_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(REPO / "deploy" / "__init__.py", "deploy/__init__.py")
        archive.write(
            REPO / "deploy" / "aws_lambda" / "__init__.py", "deploy/aws_lambda/__init__.py"
        )
        archive.write(REPO / "deploy" / "aws_lambda" / "handler.py", "deploy/aws_lambda/handler.py")
    return buffer.getvalue()


def create_stack(
    stack: str,
    *,
    endpoint_url: str | None = None,
    models: tuple[str, ...] = MODELS,
    training_image_uri: str | None = None,
) -> dict[str, Any]:
    """Create one stack's resources the way infra/aws builds them; return its outputs.

    The training image is Tandem's own, `<prefix>-training:<tag>` in the stack's ECR
    repository, unless `training_image_uri` overrides it (as `tandem:aws.training_image_uri`
    does). Each model gets its own function, alias, URL and role, all from one code archive
    in the models bucket. Names come from the program's own `AwsNames`; the keys are exactly
    the ones `contract.outputs.AWS` says a stack without CI role or MLflow exports."""
    from contract import metrics, serving
    from contract.outputs import AWS
    from infra.aws.names import BUCKET_KINDS, AwsNames, lambda_archive_key

    names = AwsNames(f"tandem-{stack}")
    prefix = names.prefix
    kms = client("kms", endpoint_url)
    key_arn = kms.create_key(Description=f"{prefix} data key")["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=names.key_alias, TargetKeyId=key_arn)

    s3 = client("s3", endpoint_url)
    buckets = {kind: names.bucket(kind, ACCOUNT) for kind in BUCKET_KINDS}
    for name in buckets.values():
        s3.create_bucket(Bucket=name)
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": key_arn,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        s3.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )

    ecr = client("ecr", endpoint_url)
    repository, serving_repository = (
        ecr.create_repository(
            repositoryName=name,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key_arn},
        )["repository"]
        for name in (names.training_repository, names.serving_repository)
    )
    if training_image_uri is None:
        training_image_uri = f"{repository['repositoryUri']}:{TRAINING_IMAGE_TAG}"

    iam = client("iam", endpoint_url)
    sagemaker_role = iam.create_role(
        RoleName=names.sagemaker_role, AssumeRolePolicyDocument=_trust("sagemaker")
    )["Role"]["Arn"]
    lambda_roles = {
        model: iam.create_role(
            RoleName=names.lambda_role(model), AssumeRolePolicyDocument=_trust("lambda")
        )["Role"]["Arn"]
        for model in models
    }

    # The pseudonym key's secret, encrypted with the stack key, with no value: the ML side
    # initialises it (infra/aws/secrets.py).
    secret_arn = client("secretsmanager", endpoint_url).create_secret(
        Name=names.pseudonym_secret, KmsKeyId=key_arn, Description=f"{prefix}: pseudonym key"
    )["ARN"]

    sagemaker = client("sagemaker", endpoint_url)
    groups = {}
    for model in models:
        groups[model] = names.model_package_group(model)
        sagemaker.create_model_package_group(
            ModelPackageGroupName=groups[model],
            ModelPackageGroupDescription=f"Versions of {model}",
        )

    # One code archive in the models bucket, one function per model created from it.
    code_key = lambda_archive_key("tandem-lambda.zip")
    s3.put_object(
        Bucket=buckets["models"],
        Key=code_key,
        Body=_function_zip(),
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key_arn,
    )
    lam = client("lambda", endpoint_url)
    endpoints = {}
    for model in models:
        function = names.function(model)
        created = lam.create_function(
            FunctionName=function,
            Description=f"Tandem inference endpoint of model {model}",
            Runtime="python3.12",
            Role=lambda_roles[model],
            Handler=HANDLER,
            Code={"S3Bucket": buckets["models"], "S3Key": code_key},
            Architectures=["arm64"],
            MemorySize=1024,
            Timeout=30,
            Environment={"Variables": {**FUNCTION_ENV, serving.ENV_MODEL_NAME: model}},
            KMSKeyArn=key_arn,
            TracingConfig={"Mode": "Active"},
            Publish=True,
        )
        lam.create_alias(
            FunctionName=function, Name=serving.LIVE_ALIAS, FunctionVersion=created["Version"]
        )
        url = lam.create_function_url_config(
            FunctionName=function, Qualifier=serving.LIVE_ALIAS, AuthType="AWS_IAM"
        )["FunctionUrl"]
        endpoints[model] = {"function_name": function, "alias": serving.LIVE_ALIAS, "url": url}

    sns = client("sns", endpoint_url)
    topic = sns.create_topic(Name=names.alarm_topic, Attributes={"KmsMasterKeyId": key_arn})
    cloudwatch = client("cloudwatch", endpoint_url)
    alarms = []
    for model in models:
        for kind, metric, statistic, operator, threshold in (
            ("drift", metrics.DRIFT_SCORE, "Maximum", "GreaterThanThreshold", 0.2),
            ("quality", metrics.MODEL_QUALITY, "Minimum", "LessThanThreshold", 0.7),
        ):
            name = names.alarm(f"{model}-{kind}")
            cloudwatch.put_metric_alarm(
                AlarmName=name,
                Namespace=metrics.NAMESPACE,
                MetricName=metric,
                Dimensions=[{"Name": k, "Value": v} for k, v in metrics.dimensions(model).items()],
                Statistic=statistic,
                Period=3600,
                EvaluationPeriods=1,
                Threshold=threshold,
                ComparisonOperator=operator,
                TreatMissingData="notBreaching",
                AlarmActions=[topic["TopicArn"]],
            )
            alarms.append(name)

    outputs: dict[str, Any] = {
        "cloud": AWS.cloud,
        "stack": stack,
        "region": REGION,
        "name_prefix": prefix,
        "kms_key_arn": key_arn,
        "data_bucket": buckets["data"],
        "models_bucket": buckets["models"],
        "logs_bucket": buckets["logs"],
        "sagemaker_role_arn": sagemaker_role,
        "lambda_role_arns": lambda_roles,
        "model_package_groups": groups,
        "endpoints": endpoints,
        "alarm_topic_arn": topic["TopicArn"],
        "alarm_names": alarms,
        "metric_namespace": metrics.NAMESPACE,
        "training_image_uri": training_image_uri,
        "training_image_repository_url": repository["repositoryUri"],
        "serving_image_uri": f"{serving_repository['repositoryUri']}:{SERVING_IMAGE_TAG}",
        "serving_image_repository_url": serving_repository["repositoryUri"],
        "lambda_code_key": code_key,
        "pseudonym_secret_arn": secret_arn,
        "ci_role_arn": "",  # no CI role, as on a stack without tandem:github_oidc
    }
    if endpoint_url:
        outputs["endpoint_url"] = endpoint_url
    return outputs


def _download_prefix(s3: Any, uri: str, dest: Path) -> None:
    bucket, prefix = urlparse(uri).netloc, urlparse(uri).path.lstrip("/")
    dest.mkdir(parents=True, exist_ok=True)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :].lstrip("/") or Path(item["Key"]).name
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))


class FakeTrainingContainer:
    """What SageMaker does around Tandem's training image, for moto: the platform's part of
    a training job, with the image's real entry point in the middle.

    moto accepts `CreateTrainingJob` and runs nothing. For each job this:

    - reads the request back (`DescribeTrainingJob`), as SageMaker has it;
    - lays out /opt/ml under a temporary directory as SageMaker does in File mode: each
      input channel downloaded to `input/data/<channel>/`, `input/config/hyperparameters.json`
      (the request's strings, verbatim) and `inputdataconfig.json`;
    - starts `deploy/training/entrypoint.py`, the file the image installs as `train`, as
      `docker run IMAGE train` would, with the request's `Environment` and the
      `TRAINING_JOB_NAME` SageMaker sets (plus `SAGEMAKER_BASE_DIR`, pointing the entry
      point at the temporary tree); from there on the entry point does everything the
      container does (code from the `code` channel, `SM_*`, `ml/train.py --key value`);
    - on success, tars `model/` to the job's `S3ModelArtifacts` with the job's KMS key, as
      SageMaker uploads SM_MODEL_DIR; on failure, raises with `output/failure`, which
      SageMaker would report as the job's FailureReason.

    It stands in for Tandem's image only (the entry point refuses the `s3://` code of a
    non-isolated job, as the image does), runs with the test's Python and packages instead
    of the image's, does not enforce network isolation, and leaves the job's status in moto
    as moto reports it (Completed).
    """

    def __init__(self, endpoint_url: str | None = None) -> None:
        self.s3 = client("s3", endpoint_url)
        self.sagemaker = client("sagemaker", endpoint_url)
        self.jobs: list[dict[str, Any]] = []

    def __call__(self, job_name: str) -> None:
        job = self.sagemaker.describe_training_job(TrainingJobName=job_name)
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "opt" / "ml"
            config_dir = base / "input" / "config"
            config_dir.mkdir(parents=True)
            (config_dir / "hyperparameters.json").write_text(json.dumps(job["HyperParameters"]))
            channels = []
            for channel in job["InputDataConfig"]:
                name = channel["ChannelName"]
                source = channel["DataSource"]["S3DataSource"]["S3Uri"]
                _download_prefix(self.s3, source, base / "input" / "data" / name)
                channels.append(name)
            (config_dir / "inputdataconfig.json").write_text(
                json.dumps({name: {"TrainingInputMode": "File"} for name in channels})
            )
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("SM_", "AWS_", "SAGEMAKER_", "PYTHONPATH"))
            }
            env.update(job.get("Environment", {}))
            env.update(TRAINING_JOB_NAME=job_name, SAGEMAKER_BASE_DIR=str(base))
            done = subprocess.run(
                [sys.executable, str(TRAINING_ENTRYPOINT), "train"],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            code = base / "code"
            failure = base / "output" / "failure"
            self.jobs.append(
                {
                    "job": job,
                    "files": sorted(p.relative_to(code).as_posix() for p in code.rglob("*")),
                    "returncode": done.returncode,
                    "stderr": done.stderr,
                    "failure": failure.read_text() if failure.is_file() else None,
                }
            )
            if done.returncode != 0:
                raise AssertionError(
                    f"training container failed ({done.returncode}): "
                    f"{self.jobs[-1]['failure']}\n{done.stderr[-4000:]}"
                )
            model_dir = base / "model"
            packed = Path(tmp) / "model.tar.gz"
            with tarfile.open(packed, "w:gz") as tar:
                for path in sorted(model_dir.iterdir()):
                    tar.add(path, arcname=path.name)
            target = urlparse(job["ModelArtifacts"]["S3ModelArtifacts"])
            self.s3.upload_file(
                str(packed),
                target.netloc,
                target.path.lstrip("/"),
                ExtraArgs={
                    "ServerSideEncryption": "aws:kms",
                    "SSEKMSKeyId": job["OutputDataConfig"]["KmsKeyId"],
                },
            )


# -- small helpers for adapter tests ---------------------------------------------------------
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


def s3_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


# a test that must also run over real HTTP (ThreadedMotoServer) takes both backends
both_backends = pytest.mark.parametrize("endpoint_url", ["in-process", "server"], indirect=True)
