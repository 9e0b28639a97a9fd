"""Training: SageMakerJobRunner and the packaging of the code a training job runs.

A job runs in SageMaker script mode on Tandem's training image: `submit` stages the data
and the code (the cloud-neutral `ml/clouds/packaging.py`) and creates the job, `wait` polls
it, `collect` fetches its model.tar.gz, verifies it and stores it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from contract import layout
from ml import artifact, tracking
from ml import train as training
from ml.clouds import packaging
from ml.clouds.aws.common import AwsOutputs, _code, _message, translate_errors
from ml.clouds.aws.store import S3ArtifactStore
from ml.clouds.base import JobResult, Progress
from ml.errors import NotFoundError, TandemError
from ml.spec import ModelSpec

# Training job names: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html
JOB_NAME_MAX = 63
_JOB_NAME_BAD = re.compile(r"[^A-Za-z0-9-]+")
JOB_TERMINAL = ("Completed", "Failed", "Stopped")
# SageMaker's script-mode conventions (SageMaker Python SDK), which Tandem's training image
# follows (deploy/training/entrypoint.py): the entry point and the code tarball arrive as
# these hyperparameters.
ENTRY_POINT = "ml/train.py"
SOURCEDIR = "sourcedir.tar.gz"
CODE_CHANNEL_DIR = "/opt/ml/input/data/code"  # where a network-isolated job gets its code


def job_name(prefix: str, output_key: str) -> str:
    """`<prefix>-<run>` (the CI role may start jobs named `<prefix>-*`), at most 63 characters."""
    run = output_key.rstrip("/").rsplit("/", 1)[-1]
    name = _JOB_NAME_BAD.sub("-", f"{prefix}-{run}").strip("-")
    if len(name) > JOB_NAME_MAX:
        digest = hashlib.sha256(output_key.encode()).hexdigest()[:10]
        name = f"{name[: JOB_NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"
    return name


@translate_errors
class SageMakerJobRunner:
    """JobRunner over SageMaker training jobs, in script mode, on Tandem's training image
    (the stack output ``training_image_uri``; deploy/training/).

    `run_training` = `submit` (stage data and code, create the job), `wait` (poll until the
    job ends), `collect` (fetch model.tar.gz, verify, store under the output key).
    `after_submit(job_name)`, when set, runs between submit and wait (log streaming, or a
    stand-in for the training container where no container runs).
    """

    def __init__(
        self,
        sagemaker: Any,
        store: S3ArtifactStore,
        outputs: AwsOutputs,
        *,
        instance_type: str = "ml.m5.large",
        volume_gb: int = 10,
        max_runtime_seconds: int = 3600,
        poll_seconds: float = 15.0,
        network_isolation: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
        after_submit: Callable[[str], None] | None = None,
    ) -> None:
        self.sagemaker = sagemaker
        self.store = store
        self.outputs = outputs
        self.instance_type = instance_type
        self.volume_gb = volume_gb
        self.max_runtime_seconds = max_runtime_seconds
        self.poll_seconds = poll_seconds
        # Tandem's image holds the dependencies and runs isolated (CKV_AWS_370): the code
        # comes as a channel. SageMaker's own scikit-learn image (an override) would have
        # to pip-install them, which needs the network.
        self.network_isolation = (
            "/sagemaker-scikit-learn:" not in outputs.training_image_uri
            if network_isolation is None
            else network_isolation
        )
        self.sleep = sleep
        self.after_submit = after_submit

    def run_training(
        self, spec: ModelSpec, data_uri: str, output_key: str, *, progress: Progress | None = None
    ) -> JobResult:
        job = self.submit(spec, data_uri, output_key, progress=progress)
        try:
            if self.after_submit is not None:
                self.after_submit(job)
            self.wait(job, progress=progress)
        except (KeyboardInterrupt, SystemExit):  # the job stops with its caller
            self.stop(job)
            raise
        return self.collect(job, output_key, progress=progress)

    def stop(self, job: str) -> None:
        with contextlib.suppress(ClientError):  # already ended
            self.sagemaker.stop_training_job(TrainingJobName=job)

    # submit
    @property
    def tracking_uri(self) -> str | None:
        """The stack's MLflow tracking server, for a job that can reach it. A network-isolated
        job cannot (no route to SageMaker's MLflow endpoint, nor to STS for its signature):
        it is not told, and the lifecycle mirrors the run from the stored artifact."""
        if self.network_isolation:
            return None
        return self.outputs.mlflow_tracking_server_arn

    def package_source(self, spec: ModelSpec, output_key: str) -> str:
        files = packaging.source_files(spec)
        if not self.network_isolation:
            # a job that logs to MLflow also installs the [mlflow] extra (sagemaker-mlflow)
            extras = ("mlflow",) if self.tracking_uri else ()
            files["requirements.txt"] = (
                "\n".join(packaging.runtime_requirements(extras)) + "\n"
            ).encode()
        key = layout.code_key(output_key, SOURCEDIR)
        return self.store.put_bytes(key, packaging.sourcedir_tarball(files))

    def submit(
        self, spec: ModelSpec, data_uri: str, output_key: str, *, progress: Progress | None = None
    ) -> str:
        """Stage data and code, create the training job; return its name."""
        name = job_name(self.outputs.name_prefix, output_key)
        if progress:
            progress(f"job {name}: staging data and code")
        channel = packaging.stage_dataset(self.store, spec, data_uri)
        source = self.package_source(spec, output_key)
        kms = self.outputs.kms_key_arn
        channels = [self._channel("train", channel)]
        if self.network_isolation:
            # no network inside: the code arrives as a channel, as the SageMaker SDK does it
            channels.append(self._channel("code", source))
            submit_dir = f"{CODE_CHANNEL_DIR}/{SOURCEDIR}"
        else:
            submit_dir = source
        hyperparameters = {
            "spec": packaging.spec_path_in_job(spec),
            "data_uri": channel,
            "sagemaker_program": ENTRY_POINT,
            "sagemaker_submit_directory": submit_dir,
            "sagemaker_region": self.outputs.region,
            "sagemaker_job_name": name,
        }
        request = {
            "TrainingJobName": name,
            # SageMaker's SDKs JSON-encode every value; ml/train.py decodes them
            "HyperParameters": {k: json.dumps(v) for k, v in hyperparameters.items()},
            "AlgorithmSpecification": {
                "TrainingImage": self.outputs.training_image_uri,
                "TrainingInputMode": "File",
            },
            "RoleArn": self.outputs.sagemaker_role_arn,
            "InputDataConfig": channels,
            "OutputDataConfig": {
                "S3OutputPath": self.store.uri_for(layout.output_key(output_key)),
                "KmsKeyId": kms,
            },
            "ResourceConfig": {
                "InstanceType": self.instance_type,
                "InstanceCount": 1,
                "VolumeSizeInGB": self.volume_gb,
                "VolumeKmsKeyId": kms,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_runtime_seconds},
            "EnableNetworkIsolation": self.network_isolation,
            "Environment": self._environment(),
            "Tags": [
                {"Key": "tandem:model", "Value": spec.name},
                {"Key": "tandem:stack", "Value": self.outputs.stack},
                {"Key": "tandem:output-key", "Value": output_key[:256]},
            ],
        }
        try:
            self.sagemaker.create_training_job(**request)
        except ClientError as exc:
            # the same output key was submitted before (a retried call): follow that job
            if _code(exc) != "ResourceInUse":
                raise TandemError(f"could not create training job {name}: {_message(exc)}") from exc
        if progress:
            progress(
                f"job {name}: submitted "
                f"({self.instance_type}, image {self.outputs.training_image_uri})"
            )
        return name

    def _environment(self) -> dict[str, str]:
        # the container has no git checkout: tell it which code it runs
        environment = {"TANDEM_CODE_VERSION": training.code_version()}
        if self.tracking_uri:
            environment[tracking.URI_ENV] = self.tracking_uri
        return environment

    @staticmethod
    def _channel(name: str, uri: str) -> dict[str, Any]:
        return {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": uri,
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "InputMode": "File",
        }

    # wait
    def wait(self, job: str, *, progress: Progress | None = None) -> dict[str, Any]:
        """Poll until the job ends; return its description. Failed or stopped: TandemError."""
        # SageMaker stops the job at MaxRuntimeInSeconds; allow for queueing and uploads too
        deadline = time.monotonic() + self.max_runtime_seconds + 3600
        last = None
        while True:
            described = self.sagemaker.describe_training_job(TrainingJobName=job)
            status = described["TrainingJobStatus"]
            state = (status, described.get("SecondaryStatus"))
            if progress and state != last:
                progress(f"job {job}: {status}" + (f" ({state[1]})" if state[1] else ""))
            last = state
            if status == "Completed":
                return described
            if status in JOB_TERMINAL:
                reason = described.get("FailureReason") or "no reason given"
                raise TandemError(
                    f"training job {job} {status.lower()}: {reason} (logs: {self.logs_uri(job)})"
                )
            if time.monotonic() > deadline:
                raise TandemError(f"training job {job} still {status} after the deadline")
            self.sleep(self.poll_seconds)

    def logs_uri(self, job: str) -> str:
        region = self.outputs.region
        group = quote(quote("/aws/sagemaker/TrainingJobs", safe=""), safe="")
        return (
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#logsV2:log-groups/log-group/{group}/log-events?logStreamNameFilter={job}"
        )

    # collect
    def collect(self, job: str, output_key: str, *, progress: Progress | None = None) -> JobResult:
        """Fetch the job's model.tar.gz, unpack and verify it, store it under `output_key`."""
        described = self.sagemaker.describe_training_job(TrainingJobName=job)
        if described["TrainingJobStatus"] != "Completed":
            raise TandemError(
                f"training job {job} is {described['TrainingJobStatus']}, not Completed"
            )
        model_uri = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if not model_uri:
            raise TandemError(f"training job {job} reports no model artifacts")
        if progress:
            progress(f"job {job}: collecting {model_uri}")
        with tempfile.TemporaryDirectory() as tmp:
            tarball = Path(tmp) / artifact.TARBALL
            try:
                self.store.download_file(model_uri, tarball)
            except NotFoundError:
                raise TandemError(
                    f"training job {job} completed but {model_uri} does not exist"
                ) from None
            unpacked = artifact.unpack(tarball, Path(tmp) / "model")  # verifies the manifest
            if not (unpacked / artifact.TARBALL).is_file():
                artifact.pack(unpacked)
            uri = self.store.put_artifact(unpacked, output_key)
            card = json.loads((unpacked / artifact.CARD).read_text())
        return JobResult(
            job_id=job,
            status="Completed",
            artifact_uri=uri,
            card=card,
            logs_uri=self.logs_uri(job),
        )
