"""Metrics, fairness, latency, and the gate that decides whether a candidate may go on.

The gate never rubber-stamps: it returns a Verdict with every check it ran and every
reason it failed, and `lifecycle.pipeline` stops at a failed verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml.spec import Gates

MAX_ROC_POINTS = 200


@dataclass
class Evaluation:
    """How a model scored on one holdout set."""

    metrics: dict[str, float]
    confusion: list[list[int]]  # [[tn, fp], [fn, tp]]
    roc: dict[str, list[float]]  # {"fpr": [...], "tpr": [...]}
    fairness: dict[str, Any] | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Evaluation:
        return cls(**raw)

    def flat_metrics(self) -> dict[str, float]:
        """Metrics, the fairness gap and latency in one flat mapping (registry, sinks)."""
        flat = dict(self.metrics)
        if self.fairness:
            flat["equal_opportunity_difference"] = self.fairness["equal_opportunity_difference"]
        for key, value in self.latency_ms.items():
            flat[f"latency_{key}_ms"] = value
        return flat


def score(
    y_true: np.ndarray,
    proba: np.ndarray,
    sensitive: np.ndarray | None = None,
    sensitive_name: str | None = None,
    threshold: float = 0.5,
) -> Evaluation:
    """Classification metrics, confusion matrix, ROC curve and per-group fairness."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
        roc_curve,
    )

    y_true = np.asarray(y_true).astype(int)
    proba = np.asarray(proba, dtype=float)
    y_pred = (proba >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, proba)) if both_classes else float("nan"),
    }
    confusion = confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist()
    roc: dict[str, list[float]] = {"fpr": [], "tpr": []}
    if both_classes:
        fpr, tpr, _ = roc_curve(y_true, proba)
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), MAX_ROC_POINTS)).astype(int))
        roc = {"fpr": fpr[keep].round(6).tolist(), "tpr": tpr[keep].round(6).tolist()}
    fairness = None
    if sensitive is not None:
        fairness = group_fairness(y_true, y_pred, np.asarray(sensitive), sensitive_name or "group")
    return Evaluation(metrics, confusion, roc, fairness, rows=len(y_true))


def group_fairness(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, attribute: str
) -> dict[str, Any]:
    """True-positive rate per group and the equal-opportunity difference (fairlearn)."""
    from fairlearn.metrics import MetricFrame, count, selection_rate, true_positive_rate

    frame = MetricFrame(
        metrics={"tpr": true_positive_rate, "selection_rate": selection_rate, "count": count},
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=groups,
    )
    by_group = frame.by_group
    tpr = by_group["tpr"].astype(float)
    return {
        "attribute": attribute,
        "groups": {
            str(g): {
                "tpr": float(by_group.loc[g, "tpr"]),
                "selection_rate": float(by_group.loc[g, "selection_rate"]),
                "count": int(by_group.loc[g, "count"]),
            }
            for g in by_group.index
        },
        # the largest gap in TPR between any two groups (fairlearn's equal_opportunity_difference)
        "equal_opportunity_difference": float(np.nanmax(tpr) - np.nanmin(tpr)),
    }


def latency(
    predict_one: Callable[[int], object], rows: int, samples: int = 300
) -> dict[str, float]:
    """Single-row inference latency percentiles in milliseconds (after a short warm-up)."""
    for i in range(min(20, rows)):
        predict_one(i)
    timings = np.empty(samples)
    for k in range(samples):
        start = time.perf_counter()
        predict_one(k % rows)
        timings[k] = (time.perf_counter() - start) * 1000
    return {"p50": float(np.percentile(timings, 50)), "p99": float(np.percentile(timings, 99))}


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Verdict:
    """The gate's decision: passed only if every check passed; `reasons` lists the failures."""

    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [c.detail for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "checks": [asdict(c) for c in self.checks],
        }


def gate(gates: Gates, candidate: Evaluation, champion: Evaluation | None = None) -> Verdict:
    """Run every gate of the spec; `champion` is the approved version scored on the same rows."""
    checks = []
    for metric, minimum in sorted(gates.min_metrics.items()):
        value = candidate.metrics.get(metric, float("nan"))
        ok = bool(value >= minimum)  # NaN fails
        checks.append(
            Check(f"min_{metric}", ok, f"{metric} {value:.4f} {'>=' if ok else '<'} {minimum}")
        )
    if champion is not None:
        metric = gates.primary_metric
        delta = candidate.metrics[metric] - champion.metrics[metric]
        ok = bool(delta >= gates.min_improvement)
        checks.append(
            Check(
                "champion",
                ok,
                f"{metric} {candidate.metrics[metric]:.4f} vs champion "
                f"{champion.metrics[metric]:.4f}: "
                f"{delta:+.4f} {'>=' if ok else '<'} required {gates.min_improvement:+.4f}",
            )
        )
    if gates.max_fairness_gap is not None:
        if candidate.fairness is None:
            checks.append(
                Check("fairness", False, "fairness gate set but no sensitive attribute scored")
            )
        else:
            gap = candidate.fairness["equal_opportunity_difference"]
            ok = bool(gap <= gates.max_fairness_gap)
            checks.append(
                Check(
                    "fairness",
                    ok,
                    f"equal-opportunity difference on {candidate.fairness['attribute']} {gap:.4f} "
                    f"{'<=' if ok else '>'} {gates.max_fairness_gap}",
                )
            )
    if gates.max_p99_latency_ms is not None:
        p99 = candidate.latency_ms.get("p99", float("nan"))
        ok = bool(p99 <= gates.max_p99_latency_ms)
        checks.append(
            Check(
                "latency",
                ok,
                f"p99 latency {p99:.3f} ms {'<=' if ok else '>'} {gates.max_p99_latency_ms} ms",
            )
        )
    return Verdict(checks)
