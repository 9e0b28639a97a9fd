"""The model registry: AzureMLModelRegistry over the workspace's model versions.

Azure ML assigns the version: azure-ai-ml reads the model's `nextVersion` and PUTs that
version. Each version points at the artifact by its Blob URI (`modelUri`), which the artifact
store wrote and verified, so azure-ai-ml uploads nothing. Metrics are the version's properties
(`tandem.metric.<name>`, fixed when it is created, as Azure ML keeps properties), lineage its
tags (run id, data hash, code version; mutable in the studio), and Tandem's status and reason
the tags `tandem.status` / `tandem.status_reason`; `archived` also archives the version in
Azure ML (hidden from the studio's lists, still readable by number). The status is read from
the tag: azure-ai-ml's Model does not expose `isArchived`, so an archive made in the studio
alone is not seen.

Concurrent registrations: Azure ML hands out numbers by read-then-PUT with nothing reserved,
and PUT is create-or-update. Two callers that read the same `nextVersion` PUT the same number:
with different artifacts the second is refused (400, "Asset paths cannot be updated"), with
the same artifact it silently becomes an update of the first. Azure ML guarantees only that a
version never changes its artifact. The adapter adds a lock per model (`registry:<name>`, in
the stack's Locks) around reading the number and creating the version, and around a status
change, so Tandem's callers get distinct, consecutive numbers; a writer outside Tandem that
races it gets Azure ML's refusal. It is not the lifecycle's `model:<name>`, which the caller
may hold through another connection: a lock of the registry's own never waits on its caller.

Like every cloud registry, the record at `registry/<model>/v<version>.json` in the store holds
the full version (metrics and tags beyond what Azure ML's tags hold); a status change writes
it before Azure ML is updated, and Azure ML's status wins when the two disagree (an update
that failed halfway reads as before).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import ResourceNotFoundError

from ml.clouds.azure.common import translate_errors
from ml.clouds.base import (
    ARCHIVED,
    PENDING,
    STATUSES,
    ArtifactStore,
    Locks,
    ModelVersion,
    checked_model,
    with_status,
)
from ml.clouds.records import VersionRecords, now
from ml.errors import NotFoundError, TandemError

# Tandem's own keys on a version; anything else in its tags is lineage.
OWN = "tandem."
STATUS_TAG = f"{OWN}status"
REASON_TAG = f"{OWN}status_reason"
ARTIFACT_PROPERTY = f"{OWN}artifact_uri"
METRIC_PROPERTY = f"{OWN}metric."
MODEL_TYPE = "custom_model"  # an ONNX artifact with Tandem's card, not an MLflow model


def registry_lock(model: str) -> str:
    """The lock around numbering and status changes of one model's versions."""
    return f"registry:{model}"


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    return str(value or "")


def _number(version: Any) -> int | None:
    text = str(version or "")
    return int(text) if text.isdigit() else None


@translate_errors
class AzureMLModelRegistry:
    """ModelRegistry over Azure ML model versions (azure-ai-ml's `MLClient.models`)."""

    def __init__(self, ml_client: Any, store: ArtifactStore, locks: Locks) -> None:
        self.models = ml_client.models
        self.records = VersionRecords(store)
        self.locks = locks

    # -- reading ---------------------------------------------------------------------------
    def _from_azure(self, model: str, found: Any) -> ModelVersion:
        """Azure ML's view (number, status) merged with the store's record (the rest)."""
        version = int(found.version)
        tags = dict(found.tags or {})
        properties = dict(found.properties or {})
        record = self.records.read(model, version) or {
            "artifact_uri": properties.get(ARTIFACT_PROPERTY) or str(found.path or ""),
            "metrics": {
                k.removeprefix(METRIC_PROPERTY): float(v)
                for k, v in properties.items()
                if k.startswith(METRIC_PROPERTY)
            },
            "tags": {k: v for k, v in tags.items() if not k.startswith(OWN)},
        }
        status = tags.get(STATUS_TAG, PENDING)
        status = status if status in STATUSES else PENDING
        # the reason belongs to the status it was given with
        if record.get("status") == status:
            reason = record.get("status_reason", "")
        else:
            reason = tags.get(REASON_TAG, "")
        created = getattr(found, "creation_context", None)
        return ModelVersion(
            model=model,
            version=version,
            status=status,
            artifact_uri=record["artifact_uri"],
            created_at=_iso(getattr(created, "created_at", None)) or record.get("created_at", ""),
            metrics={k: float(v) for k, v in (record.get("metrics") or {}).items()},
            tags={k: str(v) for k, v in (record.get("tags") or {}).items()},
            status_reason=reason,
        )

    def get_version(self, model: str, version: int) -> ModelVersion:
        model = checked_model(model)
        try:
            found = self.models.get(name=model, version=str(int(version)))
        except ResourceNotFoundError:
            raise NotFoundError(f"model {model!r} has no version {version}") from None
        return self._from_azure(model, found)

    def _versions(self, model: str) -> Iterator[Any]:
        from azure.ai.ml.constants import ListViewType

        try:
            yield from self.models.list(name=model, list_view_type=ListViewType.ALL)
        except ResourceNotFoundError:
            return  # no such model: no versions

    def list_versions(self, model: str) -> list[ModelVersion]:
        model = checked_model(model)
        found = [v for v in self._versions(model) if _number(v.version) is not None]
        return sorted((self._from_azure(model, v) for v in found), key=lambda v: v.version)

    def list_models(self) -> list[str]:
        """Every model of the workspace with a name Tandem accepts (the workspace may hold
        others' models too)."""
        from azure.ai.ml.constants import ListViewType

        names = set()
        for container in self.models.list(list_view_type=ListViewType.ALL):
            try:
                names.add(checked_model(container.name))
            except TandemError:
                continue
        return sorted(names)

    # -- writing ---------------------------------------------------------------------------
    def create_version(
        self,
        model: str,
        artifact_uri: str,
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
    ) -> ModelVersion:
        from azure.ai.ml.entities import Model

        model = checked_model(model)
        uri = artifact_uri.rstrip("/")
        parts = urlsplit(uri)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            # azure-ai-ml would upload a local path itself, around the verified store
            raise TandemError(
                f"Azure ML registers a model by the Blob URI the store verified; "
                f"{artifact_uri!r} is not one"
            )
        metrics = {k: float(v) for k, v in metrics.items()}
        lineage = {k: str(v) for k, v in tags.items()}
        entity = Model(
            name=model,
            path=uri,
            type=MODEL_TYPE,
            description=f"{model} {lineage.get('run_id', '')}".strip(),
            tags={
                **{k: v for k, v in lineage.items() if not k.startswith(OWN)},
                STATUS_TAG: PENDING,
            },
            properties={
                ARTIFACT_PROPERTY: uri,
                **{f"{METRIC_PROPERTY}{k}": repr(v) for k, v in metrics.items()},
            },
        )
        with self.locks.hold(registry_lock(model)):
            created = self.models.create_or_update(entity)  # the next number, by Azure ML
            version = _number(created.version)
            if version is None:
                raise TandemError(f"Azure ML gave {model} the version {created.version!r}")
            mv = ModelVersion(
                model=model,
                version=version,
                status=PENDING,
                artifact_uri=uri,
                created_at=_iso(created.creation_context.created_at) or now(),
                metrics=metrics,
                tags=lineage,
            )
            self.records.write(mv)
        return mv

    def set_status(self, model: str, version: int, status: str, reason: str = "") -> ModelVersion:
        model = checked_model(model)
        with self.locks.hold(registry_lock(model)):
            current = self.get_version(model, version)
            updated = with_status(current, status, reason)
            if updated is current:
                return current
            # the record first: if Azure ML's update then fails, the version reads as before
            self.records.write(updated)
            found = self.models.get(name=model, version=str(version))
            found.tags = {**(found.tags or {}), STATUS_TAG: status, REASON_TAG: reason}
            self.models.create_or_update(found)  # the same version: tags change, nothing else
            if status == ARCHIVED:
                self.models.archive(name=model, version=str(version))
        return updated
