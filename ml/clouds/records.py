"""What every adapter records in its artifact store besides artifacts: one JSON object per
registered version (`registry/<model>/v<n>.json`) and one per deployment
(`deployments/<model>/<time>-v<n>-<id>.json`, so key order is deployment order).

The local registry keeps its versions this way; the cloud registries keep side records
(metrics, tags, reasons) that their services cannot hold in full. Endpoints log every
deployment, and `current` is the newest entry.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from contract import layout
from ml.clouds.base import ArtifactStore, Deployment, ModelVersion
from ml.errors import NotFoundError

_VERSION_FILE = re.compile(r"v(\d+)\.json$")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def to_json(payload: Any) -> bytes:
    """Stable, strict JSON: sorted keys, and a NaN or infinity is an error, never invalid JSON."""
    return (
        json.dumps(payload, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"
    ).encode()


class VersionRecords:
    """One JSON record per model version in the store."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def read(self, model: str, version: int) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get_bytes(layout.registry_key(model, version)))
        except NotFoundError:
            return None

    def write(self, mv: ModelVersion) -> None:
        self.store.put_bytes(layout.registry_key(mv.model, mv.version), to_json(asdict(mv)))

    def versions(self, model: str) -> list[int]:
        """Recorded version numbers, ascending (as numbers: v1000000 comes after v999999)."""
        numbers = []
        for key in self.store.list_keys(layout.registry_prefix(model)):
            match = _VERSION_FILE.search(key.rsplit("/", 1)[-1])
            if match:
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def models(self) -> list[str]:
        names = {key.split("/")[1] for key in self.store.list_keys(layout.REGISTRY) if "/" in key}
        return sorted(names)


class DeploymentLog:
    """Every deployment of a model, one object each, oldest first."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def _keys(self, model: str) -> list[str]:
        return [
            k for k in self.store.list_keys(layout.deployments_prefix(model)) if k.endswith(".json")
        ]

    def append(self, deployment: Deployment) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")  # fixed width: sorts by time
        key = layout.deployment_key(
            deployment.model, stamp, deployment.version, uuid.uuid4().hex[:8]
        )
        self.store.put_bytes(key, to_json(asdict(deployment)))

    def history(self, model: str) -> list[Deployment]:
        return [Deployment(**json.loads(self.store.get_bytes(k))) for k in self._keys(model)]

    def current(self, model: str) -> Deployment | None:
        keys = self._keys(model)
        return Deployment(**json.loads(self.store.get_bytes(keys[-1]))) if keys else None
