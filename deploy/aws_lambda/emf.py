"""CloudWatch Embedded Metric Format: one JSON log line that is also a set of metric points.

Lambda sends every line the function writes to stdout to its log group, and CloudWatch Logs
extracts the metrics a line declares under `_aws.CloudWatchMetrics`, so the request path
never calls the CloudWatch API:
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html

The names, units, namespace and dimensions are Tandem's, from `contract.metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from contract import metrics

_encoder = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))
_DIMENSION_SETS = [list(names) for names in metrics.ENDPOINT_DIMENSIONS]


def record(
    *,
    model: str | None,
    version: int | str | None,
    values: Mapping[str, float],
    timestamp_ms: int,
    properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One EMF record: `values` (each a name of `contract.metrics.ENDPOINT_METRICS`) under
    Tandem's namespace and dimensions, with `properties` as plain log fields beside them.

    Dimension values are strings and never empty: a model not loaded yet is
    `metrics.UNKNOWN_MODEL`, a version not known is `"none"`."""
    units = metrics.ENDPOINT_METRICS
    unknown = sorted(set(values) - set(units))
    if unknown:
        raise ValueError(f"not an endpoint metric: {unknown}")
    out: dict[str, Any] = dict(properties or {})
    out["_aws"] = {
        "Timestamp": int(timestamp_ms),
        "CloudWatchMetrics": [
            {
                "Namespace": metrics.NAMESPACE,
                "Dimensions": _DIMENSION_SETS,
                "Metrics": [{"Name": name, "Unit": units[name]} for name in values],
            }
        ],
    }
    out.update(
        metrics.dimensions(model or metrics.UNKNOWN_MODEL, "none" if version is None else version)
    )
    out.update(values)
    return out


def line(record: Mapping[str, Any]) -> str:
    """The record as one line of ASCII JSON (a lone surrogate cannot break the log line)."""
    return _encoder.encode(record)
