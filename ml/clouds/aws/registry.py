"""The model registry: SageMakerModelRegistry over the stack's model package groups.

SageMaker assigns version numbers and holds the approval status; `archived`, which SageMaker
lacks, is `Rejected` with `CustomerMetadataProperties["tandem:status"] = "archived"`. The
record at `registry/<model>/v<version>.json` in the models bucket holds the full version, and
a status change writes it before SageMaker is updated.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ml import artifact
from ml.clouds.aws.common import _code, translate_errors
from ml.clouds.base import (
    APPROVED,
    ARCHIVED,
    PENDING,
    REJECTED,
    ArtifactStore,
    ModelVersion,
    checked_model,
    with_status,
)
from ml.clouds.records import VersionRecords, now
from ml.errors import NotFoundError

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


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    return str(value or "")


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


@translate_errors
class SageMakerModelRegistry:
    """ModelRegistry over the stack's SageMaker model package groups.

    SageMaker assigns the version (ModelPackageVersion) and holds the approval status;
    `registry/<model>/v<version>.json` in the models bucket holds the full record.
    """

    def __init__(
        self,
        sagemaker: Any,
        store: ArtifactStore,
        groups: Mapping[str, str],
        *,
        image_uri: str,
    ) -> None:
        # the serving image (deploy/Dockerfile, `serve` on port 8080): what SageMaker hosting
        # runs for a package; the training image has no `serve`
        self.sagemaker = sagemaker
        self.records = VersionRecords(store)
        self.groups = dict(groups)
        self.image_uri = image_uri
        self._group_arns: dict[str, str] = {}

    def _group(self, model: str) -> str:
        try:
            return self.groups[checked_model(model)]
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

    def _from_sagemaker(self, model: str, package: Mapping[str, Any]) -> ModelVersion:
        """Merge SageMaker's view (version, status) with the S3 record (everything else)."""
        version = int(package["ModelPackageVersion"])
        record = self.records.read(model, version)
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
        self.records.write(mv)
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
        if checked_model(model) not in self.groups:
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
        self.records.write(updated)
        kwargs: dict[str, Any] = {
            "ModelPackageArn": self._package_arn(model, version),
            "ModelApprovalStatus": SAGEMAKER_STATUS[status],
            "ApprovalDescription": (reason or status)[:1024],
        }
        if status == ARCHIVED:
            kwargs["CustomerMetadataProperties"] = {STATUS_KEY: ARCHIVED}
        self.sagemaker.update_model_package(**kwargs)
        return updated
