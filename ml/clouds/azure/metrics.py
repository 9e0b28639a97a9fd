"""The metrics sink: AzureMonitorMetricsSink over Azure Monitor's custom metrics REST API.

No Azure SDK publishes custom metrics, so this is the API's one call through an azure-core
pipeline: POST https://{region}.monitoring.azure.com{resourceId}/metrics with a token for
https://monitoring.azure.com/ (role Monitoring Metrics Publisher on the resource).
https://learn.microsoft.com/azure/azure-monitor/essentials/metrics-store-custom-rest-api

Points are checked up front against the API's limits (a bad one sends nothing), grouped into
the API's documents (one per minute, metric and dimension names, each series aggregated to
min/max/sum/count) and sent as x-ndjson within a request size. Each point is sent once, with
its own dimensions: an Azure Monitor alert on `Model` aggregates over `Version` by itself
(sending it again with `Model` alone, as CloudWatch needs, would count it twice here).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy
from azure.core.rest import HttpRequest

from ml.clouds.azure.common import AzureOutputs, translate_errors
from ml.clouds.base import MetricPoint
from ml.errors import TandemError

MONITOR_SCOPE = "https://monitoring.azure.com/.default"
# The API's limits (the page above): dimensions per metric, characters per name and value,
# how far a timestamp may lie in the past and the future.
DIMENSIONS_MAX = 10
TEXT_MAX = 256
PAST, FUTURE = timedelta(minutes=20), timedelta(minutes=5)
# what one request carries at most (well under what the service accepts)
REQUEST_BYTES = 256 * 1024


def metrics_url(cfg: AzureOutputs) -> str:
    """Where the stack's custom metrics go: the regional endpoint, or the emulator."""
    if cfg.management_url:
        return f"{cfg.management_url}{cfg.metrics_resource_id}/metrics"
    region = cfg.location.replace(" ", "").lower()
    return f"https://{region}.monitoring.azure.com{cfg.metrics_resource_id}/metrics"


@dataclass
class _Series:
    values: tuple[str, ...]
    numbers: list[float] = field(default_factory=list)

    def aggregate(self) -> dict[str, Any]:
        return {
            "dimValues": list(self.values),
            "min": min(self.numbers),
            "max": max(self.numbers),
            "sum": math.fsum(self.numbers),
            "count": len(self.numbers),
        }


def _minute(point: MetricPoint, now: datetime) -> datetime:
    stamp = datetime.fromisoformat(point.timestamp) if point.timestamp else now
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    if not now - PAST <= stamp <= now + FUTURE:
        raise TandemError(
            f"metric {point.name}: timestamp {point.timestamp} is outside what Azure Monitor "
            f"accepts (from {int(PAST.total_seconds() // 60)} minutes ago to "
            f"{int(FUTURE.total_seconds() // 60)} minutes ahead)"
        )
    return stamp.astimezone(UTC).replace(second=0, microsecond=0)


def _checked(point: MetricPoint) -> None:
    if not point.name or len(point.name) > TEXT_MAX:
        raise TandemError(f"metric name {point.name!r}: 1-{TEXT_MAX} characters")
    if not math.isfinite(float(point.value)):
        raise TandemError(f"metric {point.name}: Azure Monitor refuses the value {point.value}")
    if len(point.dimensions) > DIMENSIONS_MAX:
        raise TandemError(
            f"metric {point.name}: {len(point.dimensions)} dimensions "
            f"(Azure Monitor allows {DIMENSIONS_MAX})"
        )
    for name, value in point.dimensions.items():
        if not name or len(name) > TEXT_MAX or not str(value) or len(str(value)) > TEXT_MAX:
            raise TandemError(
                f"metric {point.name}: dimension {name!r}={str(value)[:40]!r}: names and "
                f"values are 1-{TEXT_MAX} characters"
            )


@translate_errors
class AzureMonitorMetricsSink:
    """MetricsSink over Azure Monitor custom metrics on the stack's metrics resource."""

    def __init__(
        self, cfg: AzureOutputs, cred: TokenCredential, *, request_bytes: int = REQUEST_BYTES
    ) -> None:
        self.url = metrics_url(cfg)
        self.namespace = cfg.metric_namespace
        self.resource_id = cfg.metrics_resource_id
        self.request_bytes = request_bytes
        self.client = PipelineClient(
            base_url=self.url,
            policies=[RetryPolicy(), BearerTokenCredentialPolicy(cred, MONITOR_SCOPE)],
        )

    def documents(self, points: Iterable[MetricPoint]) -> list[dict[str, Any]]:
        """The API's documents for `points`, every point checked first."""
        now = datetime.now(UTC)
        grouped: dict[tuple, dict[tuple[str, ...], _Series]] = {}
        for point in points:
            _checked(point)
            names = tuple(sorted(point.dimensions))
            values = tuple(str(point.dimensions[n]) for n in names)
            group = grouped.setdefault((_minute(point, now), point.name, names), {})
            group.setdefault(values, _Series(values)).numbers.append(float(point.value))
        return [
            {
                "time": minute.isoformat().replace("+00:00", "Z"),
                "data": {
                    "baseData": {
                        "metric": metric,
                        "namespace": self.namespace,
                        "dimNames": list(names),
                        "series": [s.aggregate() for s in series.values()],
                    }
                },
            }
            for (minute, metric, names), series in grouped.items()
        ]

    def batches(self, documents: list[dict[str, Any]]) -> Iterator[list[bytes]]:
        batch: list[bytes] = []
        size = 0
        for document in documents:
            line = json.dumps(document, separators=(",", ":")).encode()
            if batch and size + len(line) + 1 > self.request_bytes:
                yield batch
                batch, size = [], 0
            batch.append(line)
            size += len(line) + 1
        if batch:
            yield batch

    def emit(self, points: Iterable[MetricPoint]) -> None:
        for batch in self.batches(self.documents(points)):
            several = len(batch) > 1
            request = HttpRequest(
                "POST",
                self.url,
                headers={"content-type": "application/x-ndjson" if several else "application/json"},
                content=b"\n".join(batch),
            )
            response = self.client.send_request(request)
            if response.status_code >= 400:
                error = HttpResponseError(response=response)
                raise TandemError(
                    f"Azure Monitor refused {len(batch)} metric document(s) in "
                    f"{self.namespace} on {self.resource_id}: "
                    f"{getattr(error.error, 'code', None) or response.status_code}: "
                    f"{getattr(error.error, 'message', None) or response.text()[:300]}"
                )
