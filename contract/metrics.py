"""Tandem's own metrics: one namespace, the names alarms watch, the dimensions they carry.

Every point carries `Model` and usually `Version`; a sink also sends it with `Model` alone,
because an alarm watches one exact dimension set and cannot follow a version that changes
with every deploy.
"""

from __future__ import annotations

NAMESPACE = "Tandem"
DRIFT_SCORE = "drift_score"  # PSI-like, >= 0; higher means the inputs moved further
MODEL_QUALITY = "model_quality"  # in [0, 1], higher is better (the spec's primary metric)

DIM_MODEL = "Model"
DIM_VERSION = "Version"
ALARM_DIMENSIONS = (DIM_MODEL,)


def dimensions(model: str, version: int | str | None = None) -> dict[str, str]:
    out = {DIM_MODEL: model}
    if version is not None:
        out[DIM_VERSION] = str(version)
    return out


# The endpoint's own metrics, one point per request. On Lambda each request's log line is an
# Embedded Metric Format record (deploy/aws_lambda/emf.py), so CloudWatch turns logs into
# metrics without an API call on the request path. Name -> CloudWatch unit.
LATENCY_MS = "latency_ms"  # handler entry to response built
PREDICTIONS = "predictions"  # rows scored (0 for anything but a 200 predict)
ERRORS_4XX = "errors_4xx"  # 1 when the request was refused (bad request, 404, 413, ...)
ERRORS_5XX = "errors_5xx"  # 1 when the endpoint failed (no model loaded, a bug)
ENDPOINT_METRICS = {
    LATENCY_MS: "Milliseconds",
    PREDICTIONS: "Count",
    ERRORS_4XX: "Count",
    ERRORS_5XX: "Count",
}
# Every point under both sets: per model (what alarms watch) and per model version.
ENDPOINT_DIMENSIONS = (ALARM_DIMENSIONS, (DIM_MODEL, DIM_VERSION))
UNKNOWN_MODEL = "unknown"  # the Model dimension before any model has loaded
