"""The metrics sink: CloudWatchMetricsSink over CloudWatch PutMetricData.

Points are validated up front (a bad one sends nothing) and sent in batches within the
API's limits on metrics, bytes and dimensions per request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from contract.metrics import DIM_MODEL, DIM_VERSION
from ml.clouds.aws.common import _message, translate_errors
from ml.clouds.base import MetricPoint
from ml.errors import TandemError

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


@translate_errors
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
            if DIM_VERSION in point.dimensions and DIM_MODEL in point.dimensions:
                out.append(self._datum(point, {DIM_MODEL: point.dimensions[DIM_MODEL]}))
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
