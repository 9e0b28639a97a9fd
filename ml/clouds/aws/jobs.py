"""Training: SageMakerJobRunner and the packaging of the code a training job runs.

A job runs in SageMaker script mode on Tandem's training image: `submit` stages the data
and a reproducible sourcedir.tar.gz (`source_files`, `sourcedir_tarball`) and creates the
job, `wait` polls it, `collect` fetches its model.tar.gz, verifies it and stores it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from ml import artifact, data
from ml import train as training
from ml.clouds.aws.common import DATASETS, AwsOutputs, _code, _message
from ml.clouds.aws.store import S3ArtifactStore
from ml.clouds.base import JobResult, Progress
from ml.errors import NotFoundError, TandemError
from ml.spec import load_spec

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
SPEC_DIR = "specs"


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def source_files(spec_path: Path) -> dict[str, bytes]:
    """What a training job runs: the `ml` package, the inference core it imports, the spec."""
    import deploy.inference
    import ml

    package = Path(ml.__file__).resolve().parent
    files = {
        f"ml/{p.relative_to(package).as_posix()}": p.read_bytes()
        for p in sorted(package.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }
    inference = Path(deploy.inference.__file__).resolve()
    files["deploy/__init__.py"] = (inference.parent / "__init__.py").read_bytes()
    files["deploy/inference.py"] = inference.read_bytes()
    files[f"{SPEC_DIR}/{Path(spec_path).name}"] = Path(spec_path).read_bytes()
    return files


def runtime_requirements() -> list[str]:
    """The project's runtime dependencies, for an image that must pip-install them."""
    from importlib import metadata

    try:
        requires = metadata.requires("tandem-mlops") or []
    except metadata.PackageNotFoundError:
        requires = []
    return [r for r in requires if "extra ==" not in r]


def sourcedir_tarball(files: Mapping[str, bytes]) -> bytes:
    """A reproducible tar.gz (sorted names, zero mtimes): same code, same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(files):
            _tar_add(tar, name, files[name])
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, filename="") as gz:
        gz.write(buffer.getvalue())
    return packed.getvalue()


def job_name(prefix: str, output_key: str) -> str:
    """`<prefix>-<run>` (the CI role may start jobs named `<prefix>-*`), at most 63 characters."""
    run = output_key.rstrip("/").rsplit("/", 1)[-1]
    name = _JOB_NAME_BAD.sub("-", f"{prefix}-{run}").strip("-")
    if len(name) > JOB_NAME_MAX:
        digest = hashlib.sha256(output_key.encode()).hexdigest()[:10]
        name = f"{name[: JOB_NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"
    return name


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
        self, spec_path: Path, data_uri: str, output_key: str, *, progress: Progress | None = None
    ) -> JobResult:
        job = self.submit(spec_path, data_uri, output_key, progress=progress)
        if self.after_submit is not None:
            self.after_submit(job)
        self.wait(job, progress=progress)
        return self.collect(job, output_key, progress=progress)

    # submit
    def stage_dataset(self, data_uri: str, spec_path: Path) -> str:
        """The train channel's s3:// URI: as given, or the data uploaded (content-addressed)."""
        if data_uri.startswith("s3://"):
            return data_uri
        spec = load_spec(spec_path)
        frame = data.load_frame(data_uri, self.store, spec.dataset.format)
        digest = data.content_hash(frame).split(":", 1)[-1]
        suffix = "csv" if spec.dataset.format == "csv" else "parquet"
        key = f"{DATASETS}{spec.name}/{digest}.{suffix}"
        if not self.store.exists(key):
            buffer = io.BytesIO()
            if suffix == "csv":
                frame.to_csv(buffer, index=False)
            else:
                frame.to_parquet(buffer, index=False)
            self.store.put_bytes(key, buffer.getvalue())
        return self.store.uri_for(key)

    def package_source(self, spec_path: Path, output_key: str) -> str:
        files = source_files(spec_path)
        if not self.network_isolation:
            files["requirements.txt"] = ("\n".join(runtime_requirements()) + "\n").encode()
        key = f"{output_key.strip('/')}/code/{SOURCEDIR}"
        return self.store.put_bytes(key, sourcedir_tarball(files))

    def submit(
        self, spec_path: Path, data_uri: str, output_key: str, *, progress: Progress | None = None
    ) -> str:
        """Stage data and code, create the training job; return its name."""
        spec = load_spec(spec_path)
        name = job_name(self.outputs.name_prefix, output_key)
        if progress:
            progress(f"job {name}: staging data and code")
        channel = self.stage_dataset(data_uri, Path(spec_path))
        source = self.package_source(Path(spec_path), output_key)
        kms = self.outputs.kms_key_arn
        channels = [self._channel("train", channel)]
        if self.network_isolation:
            # no network inside: the code arrives as a channel, as the SageMaker SDK does it
            channels.append(self._channel("code", source))
            submit_dir = f"{CODE_CHANNEL_DIR}/{SOURCEDIR}"
        else:
            submit_dir = source
        hyperparameters = {
            "spec": f"{SPEC_DIR}/{Path(spec_path).name}",
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
                "S3OutputPath": self.store.uri_for(f"{output_key.strip('/')}/output"),
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
            # the container has no git checkout: tell it which code it runs
            "Environment": {"TANDEM_CODE_VERSION": training.code_version()},
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
        return JobResult(
            job_id=job, status="Completed", artifact_uri=uri, logs_uri=self.logs_uri(job)
        )
