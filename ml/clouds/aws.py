"""The AWS stack: S3, SageMaker Model Registry, CloudWatch, SageMaker training jobs, Lambda.

Built from the stack outputs alone (`infra/aws/__init__.py`, `AwsPlatform.outputs`); an
optional `endpoint_url` output sends every client to one endpoint (moto, LocalStack).

Where things live:

    s3://<models_bucket>/artifacts/<model>/<run>/           an artifact (MANIFEST.json last)
    s3://<models_bucket>/artifacts/<model>/<run>/code/      the training job's sourcedir.tar.gz
    s3://<models_bucket>/artifacts/<model>/<run>/output/    what the training job wrote
    s3://<models_bucket>/runs/, reports/, captures/         run records, reports, captures
    s3://<models_bucket>/registry/<model>/v<version>.json   one record per registered version
    s3://<models_bucket>/deployments/<model>/<time>-*.json  one record per deployment
    s3://<data_bucket>/datasets/<model>/<sha256>.parquet    staged training data

Decisions a reader should know:

- Integrity. Every upload carries `ChecksumAlgorithm=SHA256`, so S3 checks each byte it
  receives and stores the digest. `put_artifact` then verifies the stored copy without
  downloading it: `head_object` size and `ChecksumSHA256` against the local file (for a
  multipart object, the checksum of the part checksums, computed locally with the same part
  size). An object with no stored checksum is read back and hashed instead. The data files
  are verified before MANIFEST.json is written (conditionally, `If-None-Match: *`), so a key
  that has a manifest always held a verified artifact.
- Registry. SageMaker assigns version numbers and holds the approval status. `archived` is
  not a SageMaker status: an archived version is `Rejected` in SageMaker (nothing SageMaker-
  native deploys it) with `CustomerMetadataProperties["tandem:status"] = "archived"` and the
  reason in `ApprovalDescription`. The per-version S3 record holds what Tandem needs in full
  (metrics, tags, status, reason). On a status change it is written before SageMaker is
  updated, so a change interrupted halfway reads as the old status and can be retried.
- Serving. A deploy sets `MODEL_URI` (the artifact URI), `MODEL_NAME` and `MODEL_VERSION` on
  the function, publishes a version described `<model>:v<version>`, and moves the `live`
  alias. A canary keeps the live version as the alias's primary and routes `canary_weight`
  of the traffic to the new one (`RoutingConfig.AdditionalVersionWeights`). Re-deploying a
  model version that was published before (a rollback) re-points the alias to that Lambda
  version: the exact code and configuration that served it, nothing republished.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import io
import json
import math
import re
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import boto3
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from ml import artifact, data
from ml import train as training
from ml.clouds.base import (
    APPROVED,
    ARCHIVED,
    PENDING,
    REJECTED,
    Deployment,
    JobResult,
    MetricPoint,
    ModelVersion,
    Progress,
    Stack,
    with_status,
)
from ml.errors import (
    ArtifactIntegrityError,
    ConfigError,
    ConflictError,
    NotFoundError,
    TandemError,
)
from ml.spec import load_spec

REQUIRED_OUTPUTS = (
    "cloud",
    "stack",
    "region",
    "name_prefix",
    "kms_key_arn",
    "data_bucket",
    "models_bucket",
    "logs_bucket",
    "sagemaker_role_arn",
    "lambda_role_arn",
    "model_package_groups",
    "function_name",
    "function_alias",
    "function_url",
    "alarm_topic_arn",
    "alarm_names",
    "metric_namespace",
    "training_image_uri",
)

DATASETS, ARTIFACTS, REGISTRY, DEPLOYMENTS = "datasets/", "artifacts/", "registry/", "deployments/"
MIB = 1024 * 1024
MULTIPART_BYTES = 8 * MIB  # threshold and part size: the part size decides multipart checksums
S3_MAX_PARTS = 10_000
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})

# SageMaker ModelApprovalStatus <-> Tandem status (archived: Rejected + metadata, see above).
SAGEMAKER_STATUS = {
    PENDING: "PendingManualApproval",
    APPROVED: "Approved",
    REJECTED: "Rejected",
    ARCHIVED: "Rejected",
}
STATUS_KEY = "tandem:status"
# CustomerMetadataProperties limits: 50 entries, keys 1-128 characters of this class,
# values 1-256 characters.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackage.html
METADATA_MAX_ENTRIES, METADATA_KEY_MAX, METADATA_VALUE_MAX = 50, 128, 256
_METADATA_KEY_BAD = re.compile(r"[^\w\s.:/=+\-@]")

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

# PutMetricData: at most 1000 metrics and 1 MB per request, 30 dimensions per metric.
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html
METRICS_PER_REQUEST = 1000
METRICS_REQUEST_BYTES = 1_000_000
METRIC_DIMENSIONS_MAX = 30
CLOUDWATCH_UNITS = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
})  # fmt: skip

# Lambda version descriptions are at most 256 characters.
LAMBDA_DESCRIPTION_MAX = 256


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    return str(value or "")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", exc))


def _missing(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(exc) in NOT_FOUND_CODES or status == 404


def _json(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode()


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise NotFoundError(f"{uri}: not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


# -- outputs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AwsOutputs:
    """The stack outputs, checked once: a missing key is a ConfigError that names it."""

    stack: str
    region: str
    name_prefix: str
    kms_key_arn: str
    data_bucket: str
    models_bucket: str
    logs_bucket: str
    sagemaker_role_arn: str
    lambda_role_arn: str
    model_package_groups: dict[str, str]
    function_name: str
    function_alias: str
    function_url: str
    alarm_topic_arn: str
    alarm_names: list[str]
    metric_namespace: str
    training_image_uri: str
    endpoint_url: str | None = None
    ci_role_arn: str | None = None
    mlflow_tracking_server_arn: str | None = None

    @classmethod
    def parse(cls, outputs: Mapping[str, Any]) -> AwsOutputs:
        for key in REQUIRED_OUTPUTS:
            if outputs.get(key) in (None, ""):
                raise ConfigError(
                    f"aws stack outputs lack {key!r} (have: {', '.join(sorted(outputs)) or 'none'})"
                )
        if outputs["cloud"] != "aws":
            raise ConfigError(f"stack outputs are for cloud {outputs['cloud']!r}, not 'aws'")
        groups = outputs["model_package_groups"]
        if isinstance(groups, str):  # a config value may arrive JSON-encoded
            try:
                groups = json.loads(groups)
            except ValueError:
                groups = None
        if not isinstance(groups, Mapping) or not groups:
            raise ConfigError(
                "aws stack output 'model_package_groups' must map model names to group names, "
                f"got {outputs['model_package_groups']!r}"
            )
        alarms = outputs["alarm_names"]
        return cls(
            stack=str(outputs["stack"]),
            region=str(outputs["region"]),
            name_prefix=str(outputs["name_prefix"]),
            kms_key_arn=str(outputs["kms_key_arn"]),
            data_bucket=str(outputs["data_bucket"]),
            models_bucket=str(outputs["models_bucket"]),
            logs_bucket=str(outputs["logs_bucket"]),
            sagemaker_role_arn=str(outputs["sagemaker_role_arn"]),
            lambda_role_arn=str(outputs["lambda_role_arn"]),
            model_package_groups={str(k): str(v) for k, v in groups.items()},
            function_name=str(outputs["function_name"]),
            function_alias=str(outputs["function_alias"]),
            function_url=str(outputs["function_url"]),
            alarm_topic_arn=str(outputs["alarm_topic_arn"]),
            alarm_names=[
                str(a) for a in (alarms.values() if isinstance(alarms, Mapping) else alarms)
            ],
            metric_namespace=str(outputs["metric_namespace"]),
            training_image_uri=str(outputs["training_image_uri"]),
            endpoint_url=outputs.get("endpoint_url") or None,
            ci_role_arn=outputs.get("ci_role_arn") or None,
            mlflow_tracking_server_arn=outputs.get("mlflow_tracking_server_arn") or None,
        )


@functools.cache
def _model_loader() -> Any:
    """One botocore data loader per process: the service models (SageMaker's alone is
    megabytes of JSON) are parsed once, not again for every stack connected."""
    return botocore.session.get_session().get_component("data_loader")


class Clients:
    """boto3 clients of one session, all pointed at `endpoint_url` when the outputs give one."""

    def __init__(self, region: str, endpoint_url: str | None = None) -> None:
        core = botocore.session.get_session()
        core.register_component("data_loader", _model_loader())
        self.session = boto3.session.Session(botocore_session=core, region_name=region)
        self.endpoint_url = endpoint_url
        self._cache: dict[str, Any] = {}

    def __call__(self, service: str) -> Any:
        if service not in self._cache:
            config = Config(retries={"mode": "standard", "max_attempts": 5})
            if service == "s3" and self.endpoint_url:
                # an emulator on an IP address and port cannot serve bucket subdomains
                config = config.merge(Config(s3={"addressing_style": "path"}))
            self._cache[service] = self.session.client(
                service, endpoint_url=self.endpoint_url, config=config
            )
        return self._cache[service]


# -- artifact store ------------------------------------------------------------------------
def _sha256_b64(digest_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(digest_hex)).decode()


def part_size(size: int, chunk: int) -> int:
    """The part size boto3's transfer manager uses for a file of `size` bytes."""
    while math.ceil(size / chunk) > S3_MAX_PARTS:
        chunk *= 2
    return chunk


def composite_sha256(path: Path, chunk: int) -> str:
    """S3's checksum of a multipart object: sha256 over the parts' sha256 digests."""
    digests = []
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digests.append(hashlib.sha256(block).digest())
    return base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()


def verify_tarball(tarball: Path, files: Mapping[str, str]) -> None:
    """model.tar.gz must hold exactly the manifest's content; names the member that differs."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            for name, expected in sorted(files.items()):
                member = members.get(name)
                handle = tar.extractfile(member) if member else None
                if handle is None:
                    raise ArtifactIntegrityError(
                        f"{artifact.TARBALL}: {name} is missing from the tarball"
                    )
                if hashlib.sha256(handle.read()).hexdigest() != expected:
                    raise ArtifactIntegrityError(
                        f"{artifact.TARBALL}: {name} differs from the manifest"
                    )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArtifactIntegrityError(f"{artifact.TARBALL}: unreadable ({exc})") from None


class S3ArtifactStore:
    """ArtifactStore over the stack's buckets; URIs are s3://bucket/key.

    Keys under `datasets/` live in the data bucket, every other key in the models bucket.
    Every object is written with SSE-KMS under the stack's key and a SHA-256 checksum.
    """

    def __init__(
        self,
        s3: Any,
        *,
        models_bucket: str,
        data_bucket: str,
        kms_key_arn: str,
        multipart_bytes: int = MULTIPART_BYTES,
    ) -> None:
        self.s3 = s3
        self.models_bucket = models_bucket
        self.data_bucket = data_bucket
        self.kms_key_arn = kms_key_arn
        self.transfer = TransferConfig(
            multipart_threshold=multipart_bytes, multipart_chunksize=multipart_bytes
        )
        self.write_args = {
            "ServerSideEncryption": "aws:kms",
            "SSEKMSKeyId": kms_key_arn,
            "ChecksumAlgorithm": "SHA256",
        }

    # addressing
    def _locate(self, uri_or_key: str) -> tuple[str, str]:
        if uri_or_key.startswith("s3://"):
            return parse_s3_uri(uri_or_key)
        key = uri_or_key.lstrip("/")
        return (self.data_bucket if key.startswith(DATASETS) else self.models_bucket), key

    def uri_for(self, key: str) -> str:
        bucket, key = self._locate(key)
        return f"s3://{bucket}/{key}"

    # objects
    def put_bytes(self, key: str, data: bytes) -> str:
        bucket, key = self._locate(key)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, **self.write_args)
        return f"s3://{bucket}/{key}"

    def get_bytes(self, uri_or_key: str) -> bytes:
        bucket, key = self._locate(uri_or_key)
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(f"s3://{bucket}/{key}: no such object") from None
            raise

    def exists(self, uri_or_key: str) -> bool:
        bucket, key = self._locate(uri_or_key)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    def list_keys(self, prefix: str) -> list[str]:
        prefix = prefix.lstrip("/")
        if prefix.startswith(DATASETS):
            buckets = [self.data_bucket]
        elif DATASETS.startswith(prefix):  # "" or "data": both buckets may hold matches
            buckets = [self.models_bucket, self.data_bucket]
        else:
            buckets = [self.models_bucket]
        keys: set[str] = set()
        for bucket in buckets:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    # the data bucket only serves datasets/, the models bucket everything else
                    if (bucket == self.data_bucket) == key.startswith(DATASETS):
                        keys.add(key)
        return sorted(keys)

    def upload_file(self, path: Path, uri_or_key: str) -> str:
        bucket, key = self._locate(uri_or_key)
        self.s3.upload_file(
            str(path), bucket, key, ExtraArgs=dict(self.write_args), Config=self.transfer
        )
        return f"s3://{bucket}/{key}"

    def download_file(self, uri_or_key: str, path: Path) -> Path:
        bucket, key = self._locate(uri_or_key)
        try:
            self.s3.download_file(bucket, key, str(path), Config=self.transfer)
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(f"s3://{bucket}/{key}: no such object") from None
            raise
        return path

    # artifacts
    def put_artifact(self, local_dir: Path, key: str) -> str:
        local_dir = Path(local_dir)
        files = artifact.verify(local_dir)  # nothing is sent for an artifact that fails here
        tarball = local_dir / artifact.TARBALL
        if tarball.is_file():
            verify_tarball(tarball, files)
        bucket, prefix = self._locate(key.strip("/"))
        uri = f"s3://{bucket}/{prefix}"
        stored = self._stored_manifest(bucket, prefix)
        if stored is not None:
            return self._settle(local_dir, uri, files, stored)
        content = [*sorted(files), *([artifact.TARBALL] if tarball.is_file() else [])]
        for name in content:
            self.upload_file(local_dir / name, f"{uri}/{name}")
        for name in content:
            self._verify_stored(local_dir / name, bucket, f"{prefix}/{name}")
        manifest = (local_dir / artifact.MANIFEST).read_bytes()
        try:
            # If-None-Match: the first complete writer wins; a later one sees 412
            self.s3.put_object(
                Bucket=bucket,
                Key=f"{prefix}/{artifact.MANIFEST}",
                Body=manifest,
                IfNoneMatch="*",
                **self.write_args,
            )
        except ClientError as exc:
            if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
            stored = self._stored_manifest(bucket, prefix)
            if stored is None:
                raise
            return self._settle(local_dir, uri, files, stored)
        self._verify_stored(local_dir / artifact.MANIFEST, bucket, f"{prefix}/{artifact.MANIFEST}")
        return uri

    def _settle(
        self, local_dir: Path, uri: str, files: Mapping[str, str], stored: Mapping[str, str]
    ) -> str:
        """The key already holds a complete artifact: the same one (verify it) or a conflict."""
        if dict(stored) != dict(files):
            changed = sorted(n for n in {*files, *stored} if files.get(n) != stored.get(n))
            raise ConflictError(
                f"{uri}: holds a different artifact already (differs in {', '.join(changed)})"
            )
        bucket, prefix = parse_s3_uri(uri)
        for name in sorted(files):  # the manifests were compared above, as parsed JSON
            self._verify_stored(local_dir / name, bucket, f"{prefix}/{name}")
        tarball = local_dir / artifact.TARBALL
        if tarball.is_file() and not self.exists(f"{uri}/{artifact.TARBALL}"):
            self.upload_file(tarball, f"{uri}/{artifact.TARBALL}")
            self._verify_stored(tarball, bucket, f"{prefix}/{artifact.TARBALL}")
        return uri

    def _stored_manifest(self, bucket: str, prefix: str) -> dict[str, str] | None:
        try:
            raw = self.s3.get_object(Bucket=bucket, Key=f"{prefix}/{artifact.MANIFEST}")
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        try:
            return dict(json.loads(raw["Body"].read())["files"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactIntegrityError(
                f"s3://{bucket}/{prefix}/{artifact.MANIFEST}: malformed manifest ({exc})"
            ) from None

    def _verify_stored(self, path: Path, bucket: str, key: str) -> None:
        """The object at `key` is byte-for-byte `path`, checked without downloading it when S3
        holds a SHA-256 checksum (it does for everything this store writes)."""
        digest = artifact.sha256_file(path)
        size = path.stat().st_size
        where = f"s3://{bucket}/{key}"
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _missing(exc):
                raise ArtifactIntegrityError(f"{path.name}: missing from {where}") from None
            raise
        if head.get("ContentLength") != size:
            raise ArtifactIntegrityError(
                f"{path.name}: stored size {head.get('ContentLength')} differs from the local "
                f"{size} bytes ({where})"
            )
        stored = head.get("ChecksumSHA256")
        if stored:
            # a multipart object's checksum reads "<base64>-<parts>" on S3
            stored = stored.split("-", 1)[0]
            expected = {_sha256_b64(digest)}
            if size >= self.transfer.multipart_threshold:
                chunk = part_size(size, self.transfer.multipart_chunksize)
                expected.add(composite_sha256(path, chunk))
            matches = stored in expected
        else:  # written by something that sent no checksum: read it back
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            hasher = hashlib.sha256()
            for block in iter(lambda: body.read(MIB), b""):
                hasher.update(block)
            matches = hasher.hexdigest() == digest
        if not matches:
            raise ArtifactIntegrityError(f"{path.name}: stored sha256 differs ({where})")

    def get_artifact(self, uri: str, dest: Path) -> Path:
        bucket, prefix = self._locate(uri.rstrip("/"))
        where = f"s3://{bucket}/{prefix}"
        files = self._stored_manifest(bucket, prefix)
        if files is None:
            raise NotFoundError(f"{where}: no artifact there (no {artifact.MANIFEST})")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for name in (artifact.MANIFEST, *sorted(files)):
            try:
                self.download_file(f"{where}/{name}", dest / name)
            except NotFoundError:
                raise ArtifactIntegrityError(
                    f"{name}: listed in the manifest but missing from {where}"
                ) from None
        # the tarball is optional: the same files, packed for SageMaker's conventions
        with contextlib.suppress(NotFoundError):
            self.download_file(f"{where}/{artifact.TARBALL}", dest / artifact.TARBALL)
        artifact.verify(dest)
        if (dest / artifact.TARBALL).is_file():
            verify_tarball(dest / artifact.TARBALL, files)
        return dest


# -- model registry ------------------------------------------------------------------------
def _metadata(artifact_uri: str, metrics: Mapping[str, float], tags: Mapping[str, str]) -> dict:
    """CustomerMetadataProperties within SageMaker's limits (the S3 record holds it all)."""
    entries = {"tandem:artifact_uri": artifact_uri}
    entries |= {f"tag:{k}": str(v) for k, v in sorted(tags.items())}
    entries |= {f"metric:{k}": repr(float(v)) for k, v in sorted(metrics.items())}
    out: dict[str, str] = {}
    for key, value in entries.items():
        key = _METADATA_KEY_BAD.sub("_", key)[:METADATA_KEY_MAX]
        if value and len(out) < METADATA_MAX_ENTRIES:
            out[key] = value[:METADATA_VALUE_MAX]
    return out


class SageMakerModelRegistry:
    """ModelRegistry over the stack's SageMaker model package groups.

    SageMaker assigns the version (ModelPackageVersion) and holds the approval status;
    `registry/<model>/v<version>.json` in the models bucket holds the full record.
    """

    def __init__(
        self,
        sagemaker: Any,
        store: S3ArtifactStore,
        groups: Mapping[str, str],
        *,
        image_uri: str,
    ) -> None:
        self.sagemaker = sagemaker
        self.store = store
        self.groups = dict(groups)
        self.image_uri = image_uri
        self._group_arns: dict[str, str] = {}

    def _group(self, model: str) -> str:
        try:
            return self.groups[model]
        except KeyError:
            raise NotFoundError(
                f"model {model!r} has no model package group on this stack "
                f"(configured: {', '.join(sorted(self.groups))})"
            ) from None

    def _package_arn(self, model: str, version: int) -> str:
        group = self._group(model)
        if group not in self._group_arns:
            described = self.sagemaker.describe_model_package_group(ModelPackageGroupName=group)
            self._group_arns[group] = described["ModelPackageGroupArn"]
        group_arn = self._group_arns[group]
        return group_arn.replace(":model-package-group/", ":model-package/", 1) + f"/{version}"

    @staticmethod
    def record_key(model: str, version: int) -> str:
        return f"{REGISTRY}{model}/v{version}.json"

    def _record(self, model: str, version: int) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get_bytes(self.record_key(model, version)))
        except NotFoundError:
            return None

    def _write_record(self, mv: ModelVersion) -> None:
        self.store.put_bytes(self.record_key(mv.model, mv.version), _json(mv.__dict__))

    def _from_sagemaker(self, model: str, package: Mapping[str, Any]) -> ModelVersion:
        """Merge SageMaker's view (version, status) with the S3 record (everything else)."""
        version = int(package["ModelPackageVersion"])
        record = self._record(model, version)
        if record is None:  # no record (created outside Tandem, or interrupted): describe it
            package = self.sagemaker.describe_model_package(
                ModelPackageName=package["ModelPackageArn"]
            )
            meta = package.get("CustomerMetadataProperties") or {}
            containers = package.get("InferenceSpecification", {}).get("Containers") or [{}]
            data_url = containers[0].get("ModelDataUrl", "")
            record = {
                "artifact_uri": meta.get("tandem:artifact_uri")
                or data_url.removesuffix(f"/{artifact.TARBALL}"),
                "metrics": {k[7:]: float(v) for k, v in meta.items() if k.startswith("metric:")},
                "tags": {k[4:]: v for k, v in meta.items() if k.startswith("tag:")},
                "status": meta.get(STATUS_KEY, ""),
                "status_reason": package.get("ApprovalDescription", ""),
            }
        meta = package.get("CustomerMetadataProperties") or {}
        sm_status = package.get("ModelApprovalStatus", SAGEMAKER_STATUS[PENDING])
        if sm_status == "Approved":
            status = APPROVED
        elif sm_status == "Rejected":
            archived = ARCHIVED in (record.get("status"), meta.get(STATUS_KEY))
            status = ARCHIVED if archived else REJECTED
        else:
            status = PENDING
        # the recorded reason belongs to the recorded status (a change made in SageMaker
        # directly has no Tandem reason)
        reason = record.get("status_reason", "") if record.get("status") == status else ""
        return ModelVersion(
            model=model,
            version=version,
            status=status,
            artifact_uri=record["artifact_uri"],
            created_at=_iso(package.get("CreationTime")) or record.get("created_at", ""),
            metrics={k: float(v) for k, v in (record.get("metrics") or {}).items()},
            tags={k: str(v) for k, v in (record.get("tags") or {}).items()},
            status_reason=reason,
        )

    def create_version(
        self,
        model: str,
        artifact_uri: str,
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
    ) -> ModelVersion:
        group = self._group(model)
        uri = artifact_uri.rstrip("/")
        created = self.sagemaker.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=f"{model} {tags.get('run_id', '')}".strip()[:1024],
            InferenceSpecification={
                "Containers": [
                    {"Image": self.image_uri, "ModelDataUrl": f"{uri}/{artifact.TARBALL}"}
                ],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            ModelApprovalStatus=SAGEMAKER_STATUS[PENDING],
            CustomerMetadataProperties=_metadata(uri, metrics, tags),
            # the model card holds the holdout metrics, fairness and latency in JSON
            ModelMetrics={
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": f"{uri}/{artifact.CARD}",
                    }
                }
            },
            # one token per call: botocore's retries of this call cannot create two versions
            ClientToken=uuid.uuid4().hex,
        )
        package = self.sagemaker.describe_model_package(ModelPackageName=created["ModelPackageArn"])
        mv = ModelVersion(
            model=model,
            version=int(package["ModelPackageVersion"]),
            status=PENDING,
            artifact_uri=uri,
            created_at=_iso(package.get("CreationTime")) or now(),
            metrics={k: float(v) for k, v in metrics.items()},
            tags={k: str(v) for k, v in tags.items()},
        )
        self._write_record(mv)
        return mv

    def get_version(self, model: str, version: int) -> ModelVersion:
        arn = self._package_arn(model, version)
        try:
            package = self.sagemaker.describe_model_package(ModelPackageName=arn)
        except ClientError as exc:
            if _code(exc) in ("ValidationException", "ResourceNotFound"):
                raise NotFoundError(f"model {model!r} has no version {version}") from None
            raise
        return self._from_sagemaker(model, package)

    def _packages(self, model: str, limit: int | None = None) -> Iterator[Mapping[str, Any]]:
        kwargs: dict[str, Any] = {
            "ModelPackageGroupName": self._group(model),
            "SortBy": "CreationTime",
            "SortOrder": "Ascending",
        }
        if limit:
            kwargs["PaginationConfig"] = {"MaxItems": limit}
        try:
            for page in self.sagemaker.get_paginator("list_model_packages").paginate(**kwargs):
                yield from page.get("ModelPackageSummaryList", [])
        except ClientError as exc:
            if _code(exc) in ("ValidationException", "ResourceNotFound"):
                return  # the group is gone: no versions
            raise

    def list_versions(self, model: str) -> list[ModelVersion]:
        if model not in self.groups:
            return []
        versions = [self._from_sagemaker(model, p) for p in self._packages(model)]
        return sorted(versions, key=lambda v: v.version)

    def list_models(self) -> list[str]:
        return sorted(m for m in self.groups if next(iter(self._packages(m, limit=1)), None))

    def set_status(self, model: str, version: int, status: str, reason: str = "") -> ModelVersion:
        current = self.get_version(model, version)
        updated = with_status(current, status, reason)
        if updated is current:
            return current
        # the record first: if SageMaker's update then fails, the version reads as before
        self._write_record(updated)
        kwargs: dict[str, Any] = {
            "ModelPackageArn": self._package_arn(model, version),
            "ModelApprovalStatus": SAGEMAKER_STATUS[status],
            "ApprovalDescription": (reason or status)[:1024],
        }
        if status == ARCHIVED:
            kwargs["CustomerMetadataProperties"] = {STATUS_KEY: ARCHIVED}
        self.sagemaker.update_model_package(**kwargs)
        return updated


# -- metrics -------------------------------------------------------------------------------
class CloudWatchMetricsSink:
    """MetricsSink over CloudWatch PutMetricData, batched within the API's limits.

    A point with a `Version` dimension is also sent with `{Model}` alone: an alarm watches
    one exact dimension set and cannot follow a version that changes with every deploy.
    """

    def __init__(self, cloudwatch: Any, namespace: str) -> None:
        self.cloudwatch = cloudwatch
        self.namespace = namespace

    @staticmethod
    def _datum(point: MetricPoint, dimensions: Mapping[str, str]) -> dict[str, Any]:
        stamp = datetime.fromisoformat(point.timestamp) if point.timestamp else datetime.now(UTC)
        return {
            "MetricName": point.name,
            "Dimensions": [{"Name": k, "Value": str(v)} for k, v in sorted(dimensions.items())],
            "Timestamp": stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC),
            "Value": float(point.value),
            "Unit": point.unit,
        }

    def datums(self, points: Iterable[MetricPoint]) -> list[dict[str, Any]]:
        """Every datum to send, validated up front so a bad point sends nothing at all."""
        out = []
        for point in points:
            if not point.name or len(point.name) > 255:
                raise TandemError(f"metric name {point.name!r}: 1-255 characters")
            if not math.isfinite(float(point.value)):
                raise TandemError(
                    f"metric {point.name}: CloudWatch refuses the value {point.value}"
                )
            if point.unit not in CLOUDWATCH_UNITS:
                raise TandemError(
                    f"metric {point.name}: unit {point.unit!r} is not a CloudWatch unit"
                )
            if len(point.dimensions) > METRIC_DIMENSIONS_MAX:
                raise TandemError(
                    f"metric {point.name}: {len(point.dimensions)} dimensions "
                    f"(CloudWatch allows {METRIC_DIMENSIONS_MAX})"
                )
            out.append(self._datum(point, point.dimensions))
            if "Version" in point.dimensions and "Model" in point.dimensions:
                out.append(self._datum(point, {"Model": point.dimensions["Model"]}))
        return out

    @staticmethod
    def batches(datums: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        size = 0
        for datum in datums:
            # a generous estimate of the encoded size: the query protocol repeats long keys
            cost = 3 * len(json.dumps(datum, default=str))
            if batch and (len(batch) == METRICS_PER_REQUEST or size + cost > METRICS_REQUEST_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(datum)
            size += cost
        if batch:
            yield batch

    def emit(self, points: Iterable[MetricPoint]) -> None:
        for batch in self.batches(self.datums(points)):
            try:
                self.cloudwatch.put_metric_data(Namespace=self.namespace, MetricData=batch)
            except ClientError as exc:
                raise TandemError(
                    f"CloudWatch refused {len(batch)} metric(s) in {self.namespace}: "
                    f"{_message(exc)}"
                ) from exc


# -- training jobs -------------------------------------------------------------------------
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


# -- serving -------------------------------------------------------------------------------
def _version_tag(model: str, version: int) -> str:
    return f"{model}:v{version}"


class LambdaEndpoint:
    """EndpointTarget over the stack's Lambda function and its `live` alias.

    The function has one `MODEL_URI` (infra/aws/serving.py), so it serves one model at a
    time: deploying another model's version replaces what it serves. Deployments are
    recorded one object each under `deployments/<model>/`, named by time, so `history` is
    a listing and `current` its last entry.
    """

    def __init__(
        self,
        lambda_client: Any,
        store: S3ArtifactStore,
        *,
        function_name: str,
        alias: str,
        url: str,
        poll_seconds: float = 1.0,
        timeout_seconds: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = lambda_client
        self.store = store
        self.function_name = function_name
        self.alias = alias
        self.url = url
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.sleep = sleep

    # records
    @staticmethod
    def _prefix(model: str) -> str:
        return f"{DEPLOYMENTS}{model}/"

    def history(self, model: str) -> list[Deployment]:
        keys = [k for k in self.store.list_keys(self._prefix(model)) if k.endswith(".json")]
        return [Deployment(**json.loads(self.store.get_bytes(k))) for k in keys]

    def current(self, model: str) -> Deployment | None:
        keys = [k for k in self.store.list_keys(self._prefix(model)) if k.endswith(".json")]
        return Deployment(**json.loads(self.store.get_bytes(keys[-1]))) if keys else None

    def _record(self, deployment: Deployment) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        # time first: key order is deployment order
        name = f"{stamp}-v{deployment.version}-{uuid.uuid4().hex[:8]}.json"
        key = f"{self._prefix(deployment.model)}{name}"
        self.store.put_bytes(key, _json(deployment.__dict__))

    # lambda
    def _alias(self) -> dict[str, Any]:
        return self.client.get_alias(FunctionName=self.function_name, Name=self.alias)

    @staticmethod
    def _weights(alias: Mapping[str, Any]) -> dict[str, float]:
        routing = alias.get("RoutingConfig") or {}
        return {k: float(v) for k, v in (routing.get("AdditionalVersionWeights") or {}).items()}

    def _alias_serves(self, alias: Mapping[str, Any], deployment: Deployment) -> bool:
        version = deployment.details.get("function_version")
        weights = self._weights(alias)
        if deployment.canary_weight is None:
            return alias.get("FunctionVersion") == version and not weights
        return (
            alias.get("FunctionVersion") == deployment.details.get("primary_function_version")
            and set(weights) == {version}
            and math.isclose(weights[version], deployment.canary_weight)
        )

    def _wait_ready(self) -> dict[str, Any]:
        """The function's configuration once no update is in progress."""
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            conf = self.client.get_function_configuration(FunctionName=self.function_name)
            update = conf.get("LastUpdateStatus") or "Successful"
            state = conf.get("State") or "Active"
            if update == "Failed":
                raise TandemError(
                    f"updating {self.function_name} failed: "
                    f"{conf.get('LastUpdateStatusReason') or 'no reason given'}"
                )
            if state == "Failed":
                raise TandemError(
                    f"{self.function_name} is in state Failed: {conf.get('StateReason')}"
                )
            if update == "Successful" and state == "Active":
                return conf
            if time.monotonic() > deadline:
                raise TandemError(
                    f"{self.function_name}: still {state}/{update} after {self.timeout_seconds:g}s"
                )
            self.sleep(self.poll_seconds)

    def published_version(self, model: str, version: int, artifact_uri: str) -> str | None:
        """The Lambda version already published for this model version, if any."""
        tag = _version_tag(model, version)
        found: list[int] = []
        pages = self.client.get_paginator("list_versions_by_function").paginate(
            FunctionName=self.function_name
        )
        for page in pages:
            for conf in page.get("Versions", []):
                if conf.get("Version") == "$LATEST":
                    continue
                if (conf.get("Description") or "").split(" ", 1)[0] != tag:
                    continue
                variables = (conf.get("Environment") or {}).get("Variables")
                if variables is not None and variables.get("MODEL_URI") != artifact_uri:
                    continue
                found.append(int(conf["Version"]))
        return str(max(found)) if found else None

    def _publish(self, mv: ModelVersion) -> str:
        conf = self._wait_ready()
        environment = conf.get("Environment") or {}
        if "Error" in environment:
            error = environment["Error"]
            raise ConfigError(
                f"cannot read the environment of {self.function_name} "
                f"({error.get('ErrorCode')}: {error.get('Message')}); the deployer needs "
                "kms:Decrypt on the stack key through Lambda"
            )
        variables = dict(environment.get("Variables") or {})
        wanted = {
            **variables,
            "MODEL_URI": mv.artifact_uri,
            "MODEL_NAME": mv.model,
            "MODEL_VERSION": str(mv.version),
        }
        guard = {"RevisionId": conf["RevisionId"]} if conf.get("RevisionId") else {}
        try:
            if wanted != variables:
                self.client.update_function_configuration(
                    FunctionName=self.function_name, Environment={"Variables": wanted}, **guard
                )
                conf = self._wait_ready()
                guard = {"RevisionId": conf["RevisionId"]} if conf.get("RevisionId") else {}
            published = self.client.publish_version(
                FunctionName=self.function_name,
                Description=f"{_version_tag(mv.model, mv.version)} {mv.artifact_uri}"[
                    :LAMBDA_DESCRIPTION_MAX
                ],
                **guard,
            )
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailedException", "ResourceConflictException"):
                raise ConflictError(
                    f"{self.function_name} changed while deploying {mv.model} v{mv.version} "
                    f"({_message(exc)}); deploy again"
                ) from exc
            raise
        served = (published.get("Environment") or {}).get("Variables")
        if served is not None and served.get("MODEL_URI") != mv.artifact_uri:
            raise ConflictError(
                f"{self.function_name} version {published['Version']} serves "
                f"{served.get('MODEL_URI')}, not {mv.artifact_uri}: another deploy interleaved"
            )
        return str(published["Version"])

    def deploy(self, version: ModelVersion, *, canary_weight: float | None = None) -> Deployment:
        if canary_weight is not None and not 0.0 < canary_weight < 1.0:
            raise TandemError(
                f"canary_weight must be between 0 and 1 (exclusive), got {canary_weight}"
            )
        current = self.current(version.model)
        alias = self._alias()
        if (
            current is not None
            and current.version == version.version
            and current.canary_weight == canary_weight
            and self._alias_serves(alias, current)
        ):
            return current
        with tempfile.TemporaryDirectory() as tmp:
            # never point the endpoint at an artifact that is missing or fails its manifest
            self.store.get_artifact(version.artifact_uri, Path(tmp))
        reused = self.published_version(version.model, version.version, version.artifact_uri)
        function_version = reused or self._publish(version)
        details = {
            "function_name": self.function_name,
            "alias": self.alias,
            "function_version": function_version,
            "published": "false" if reused else "true",
        }
        if canary_weight is None:
            routing: dict[str, Any] = {"AdditionalVersionWeights": {}}
            primary = function_version
        else:
            primary = str(alias.get("FunctionVersion"))
            if current is None or primary in ("$LATEST", function_version):
                raise TandemError(
                    f"{version.model} v{version.version}: a canary needs another live version "
                    "of the model to keep as the primary; deploy without a canary first"
                )
            routing = {"AdditionalVersionWeights": {function_version: canary_weight}}
            details["primary_function_version"] = primary
            details["primary_model_version"] = str(
                current.details.get("primary_model_version", current.version)
                if current.canary_weight is not None
                else current.version
            )
        guard = {"RevisionId": alias["RevisionId"]} if alias.get("RevisionId") else {}
        try:
            self.client.update_alias(
                FunctionName=self.function_name,
                Name=self.alias,
                FunctionVersion=primary,
                RoutingConfig=routing,
                **guard,
            )
        except ClientError as exc:
            if _code(exc) == "PreconditionFailedException":
                raise ConflictError(
                    f"alias {self.alias} of {self.function_name} moved while deploying; "
                    "deploy again"
                ) from exc
            raise
        deployment = Deployment(
            model=version.model,
            version=version.version,
            artifact_uri=version.artifact_uri,
            endpoint=self.url,
            deployed_at=now(),
            canary_weight=canary_weight,
            details=details,
        )
        self._record(deployment)
        return deployment


# -- the stack -----------------------------------------------------------------------------
def connect(outputs: Mapping[str, Any]) -> Stack:
    """The AWS Stack of one environment, from its stack outputs alone."""
    cfg = AwsOutputs.parse(outputs)
    clients = Clients(cfg.region, cfg.endpoint_url)
    store = S3ArtifactStore(
        clients("s3"),
        models_bucket=cfg.models_bucket,
        data_bucket=cfg.data_bucket,
        kms_key_arn=cfg.kms_key_arn,
    )
    return Stack(
        cloud="aws",
        name=cfg.stack,
        store=store,
        registry=SageMakerModelRegistry(
            clients("sagemaker"), store, cfg.model_package_groups, image_uri=cfg.training_image_uri
        ),
        metrics=CloudWatchMetricsSink(clients("cloudwatch"), cfg.metric_namespace),
        jobs=SageMakerJobRunner(clients("sagemaker"), store, cfg),
        endpoint=LambdaEndpoint(
            clients("lambda"),
            store,
            function_name=cfg.function_name,
            alias=cfg.function_alias,
            url=cfg.function_url,
        ),
        outputs=dict(outputs),
    )
