"""Reference statistics of the training data, and the drift tests that compare against them.

`baseline.json` holds, per feature: quantile bin edges and counts (numeric), category
frequencies (categorical), and the missing rate. Only features are described, and a
personal-data column is never a feature (the spec refuses it), so no personal value or
statistic of one is ever stored here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ml.data import MISSING

if TYPE_CHECKING:
    from ml.spec import ModelSpec

BINS = 10
TOP_CATEGORIES = 50
EPSILON = 1e-6  # keeps PSI finite when a bin is empty on one side


def _numeric_baseline(column: pd.Series) -> dict[str, Any]:
    values = column.dropna().to_numpy(dtype=float)
    edges = (
        np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1))) if len(values) else np.array([])
    )
    counts = _bin_counts(values, edges) if len(edges) > 1 else [len(values)]
    return {
        "type": "numeric",
        "edges": edges.tolist(),
        "counts": counts,
        "mean": float(values.mean()) if len(values) else None,
        "std": float(values.std()) if len(values) else None,
        "missing_rate": float(column.isna().mean()),
    }


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> list[int]:
    # interior edges only: values below/above the training range fall in the outer bins
    index = np.searchsorted(edges[1:-1], values, side="right")
    return np.bincount(index, minlength=len(edges) - 1).tolist()


def _categorical_baseline(column: pd.Series) -> dict[str, Any]:
    missing = column.isna() | (column == MISSING)
    present = column[~missing].astype(str)
    freq = present.value_counts(normalize=True)
    top = freq.head(TOP_CATEGORIES)
    return {
        "type": "categorical",
        "frequencies": {str(k): float(v) for k, v in top.items()},
        "other_rate": float(freq.iloc[TOP_CATEGORIES:].sum()),
        "missing_rate": float(missing.mean()),
    }


def baseline(
    frame: pd.DataFrame,
    spec: ModelSpec,
    output: np.ndarray | None = None,
    labels: list[Any] | None = None,
) -> dict[str, Any]:
    """Per-feature reference statistics of the training frame, and of the model's answers on
    it (`output`, as deploy.inference.Model.scores gives them) when given."""
    features = {}
    for feature in spec.features:
        column = frame[feature.name]
        if feature.type == "numeric":
            features[feature.name] = _numeric_baseline(column)
        else:
            features[feature.name] = _categorical_baseline(column)
    reference: dict[str, Any] = {"rows": len(frame), "bins": BINS, "features": features}
    if output is not None:
        reference["prediction"] = prediction_baseline(output, labels)
    return reference


def prediction_baseline(output: np.ndarray, labels: list[Any] | None) -> dict[str, Any]:
    """What the model answered on its training rows: the predicted class's frequencies (and,
    for two classes, the positive class's probability), or the predicted value's bins: a
    live answer drifting from this is the first sign of a model going stale."""
    output = np.asarray(output, dtype=float)
    if labels is None:  # a regression: the predicted value
        return {"value": _numeric_baseline(pd.Series(output))}
    predicted = pd.Series([str(labels[k]) for k in output.argmax(axis=1)], dtype=object)
    entry = {"label": _categorical_baseline(predicted)}
    if len(labels) == 2:
        entry["probability"] = _numeric_baseline(pd.Series(output[:, -1]))
    return entry


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two count (or share) vectors of the same bins."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e = e / max(e.sum(), EPSILON) + EPSILON
    a = a / max(a.sum(), EPSILON) + EPSILON
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(reference: dict[str, Any], column: pd.Series) -> float:
    """PSI of a live column against its baseline entry."""
    if reference["type"] == "numeric":
        values = column.dropna().to_numpy(dtype=float)
        edges = np.asarray(reference["edges"])
        if len(edges) < 2:
            return 0.0
        return psi(np.asarray(reference["counts"]), np.asarray(_bin_counts(values, edges)))
    present = column[column.notna() & (column != MISSING)].astype(str)
    categories = list(reference["frequencies"])
    shares = present.value_counts(normalize=True)
    expected = [*reference["frequencies"].values(), reference["other_rate"]]
    actual = [float(shares.get(c, 0.0)) for c in categories]
    actual.append(max(0.0, 1.0 - sum(actual)))
    return psi(np.asarray(expected), np.asarray(actual))
