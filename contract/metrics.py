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
