"""Metrics, fairness, latency, and the gate that decides whether a candidate may go on.

The gate never rubber-stamps: it returns a Verdict with every check it ran and every
reason it failed, and `lifecycle.pipeline` stops at a failed verdict.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml.data import MISSING
from ml.spec import Gates

MAX_ROC_POINTS = 200

# Fairness is judged only between groups that have something to compare: at least
# FAIRNESS_MIN_GROUPS known values of the attribute, each with at least the spec's
# gates.min_group_size rows and FAIRNESS_MIN_POSITIVES positive rows (a true-positive rate
# needs positives). Other groups are reported and left out of the gap, and the verdict says so.
FAIRNESS_MIN_GROUPS = 2
FAIRNESS_MIN_POSITIVES = 1

# Latency: see `latency` for why it is measured in short rounds and the best round is kept.
LATENCY_WARMUP = 20
LATENCY_ROUNDS = 15
LATENCY_SAMPLES = 100
LATENCY_MIN_ROUNDS = 3
LATENCY_BUDGET_SECONDS = 2.0


@dataclass
class Evaluation:
    """How a model scored on one holdout set."""

    metrics: dict[str, float]
    confusion: list[list[int]]  # [[tn, fp], [fn, tp]]
    roc: dict[str, list[float]]  # {"fpr": [...], "tpr": [...]}
    fairness: dict[str, Any] | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    latency_method: dict[str, Any] = field(default_factory=dict)  # how latency_ms was measured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Evaluation:
        """The inverse of to_dict, also after strict JSON (which wrote NaN as null)."""
        raw = dict(raw)
        raw["metrics"] = _nan_for_null(raw["metrics"])
        raw["latency_ms"] = _nan_for_null(raw.get("latency_ms", {}))
        if raw.get("fairness"):
            fairness = dict(raw["fairness"])
            gap = fairness.get("equal_opportunity_difference")
            fairness["equal_opportunity_difference"] = math.nan if gap is None else gap
            # an undefined rate stays None (null): it is no number, not even NaN
            fairness["groups"] = {
                g: {**_nan_for_null(v), "tpr": v.get("tpr")}
                for g, v in fairness.get("groups", {}).items()
            }
            raw["fairness"] = fairness
        return cls(**raw)

    def flat_metrics(self) -> dict[str, float]:
        """Metrics, the fairness gap and latency in one flat mapping (registry, sinks, runs).

        A value that could not be computed (a NaN ROC AUC, a fairness gap with too little
        data to judge) is left out rather than stored as NaN or 0: readers see it is absent.
        """
        flat = dict(self.metrics)
        if self.fairness:
            flat["equal_opportunity_difference"] = self.fairness["equal_opportunity_difference"]
        for key, value in self.latency_ms.items():
            flat[f"latency_{key}_ms"] = value
        return {k: v for k, v in flat.items() if v is not None and math.isfinite(v)}


def score(
    y_true: np.ndarray,
    proba: np.ndarray,
    sensitive: np.ndarray | None = None,
    sensitive_name: str | None = None,
    threshold: float = 0.5,
    min_group_size: int = 1,
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
        fairness = group_fairness(
            y_true, y_pred, np.asarray(sensitive), sensitive_name or "group", min_group_size
        )
    return Evaluation(metrics, confusion, roc, fairness, rows=len(y_true))


def _nan_for_null(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: math.nan if v is None else v for k, v in values.items()}


def _is_missing(group: object) -> bool:
    return group is None or group == MISSING or (isinstance(group, float) and math.isnan(group))


def group_fairness(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    attribute: str,
    min_group_size: int = 1,
) -> dict[str, Any]:
    """True-positive rate per group and the equal-opportunity difference (fairlearn).

    Every group is reported. Its TPR is None ("undefined") when it has no positive rows
    (fairlearn reports 0.0 there, which is no rate at all). A group is judged, i.e. enters
    the gap, when it has at least `min_group_size` rows (the spec's gates.min_group_size)
    and FAIRNESS_MIN_POSITIVES positive rows; `left_out` names every other group and why, so
    a tiny or positive-free group never decides the gate, and never silently. The gap is
    the largest difference in TPR between two judged groups, judged only when at least
    FAIRNESS_MIN_GROUPS known values are judged (rows with the attribute missing are their
    own group and may enter the gap, but never count towards that minimum). Otherwise
    `insufficient_data` says why and the gap is NaN: never a gap of 0.
    """
    from fairlearn.metrics import MetricFrame, count, selection_rate, true_positive_rate

    y_true = np.asarray(y_true).astype(int)
    # one level for a missing attribute, as data.groups writes it (fairlearn refuses None)
    groups = np.array([MISSING if _is_missing(g) else g for g in groups], dtype=object)
    frame = MetricFrame(
        metrics={"tpr": true_positive_rate, "selection_rate": selection_rate, "count": count},
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=groups,
    )
    by_group = frame.by_group
    positives = MetricFrame(
        metrics=lambda t, p: int(np.sum(t)), y_true=y_true, y_pred=y_pred, sensitive_features=groups
    ).by_group
    report: dict[str, dict[str, Any]] = {}
    rates: dict[str, float] = {}
    left_out: dict[str, str] = {}
    known = 0
    for group in by_group.index:
        rows, positive = int(by_group.loc[group, "count"]), int(positives.loc[group])
        defined = positive >= FAIRNESS_MIN_POSITIVES
        if not defined:
            status = "undefined"
            left_out[str(group)] = f"no positive rows ({rows} rows): TPR undefined"
        elif rows < min_group_size:
            status = "small"
            left_out[str(group)] = f"{rows} rows, fewer than min_group_size {min_group_size}"
        else:
            status = "judged"
        report[str(group)] = {
            "tpr": float(by_group.loc[group, "tpr"]) if defined else None,
            "selection_rate": float(by_group.loc[group, "selection_rate"]),
            "count": rows,
            "positives": positive,
            "status": status,
        }
        if status == "judged":
            rates[str(group)] = report[str(group)]["tpr"]
            known += not _is_missing(group)
    insufficient = None
    if known < FAIRNESS_MIN_GROUPS:
        seen = ", ".join(
            f"{g!r}: {v['count']} rows, {v['positives']} positive" for g, v in report.items()
        )
        insufficient = (
            f"{known} group(s) of {attribute} with at least {min_group_size} row(s) and "
            f"{FAIRNESS_MIN_POSITIVES} positive row(s) in the holdout, at least "
            f"{FAIRNESS_MIN_GROUPS} needed ({seen})"
        )
    return {
        "attribute": attribute,
        "groups": report,
        "min_group_size": min_group_size,
        "left_out": left_out,
        # the largest gap in TPR between any two judged groups (equal-opportunity difference)
        "equal_opportunity_difference": (
            math.nan if insufficient else max(rates.values()) - min(rates.values())
        ),
        "insufficient_data": insufficient,
    }


def _left_out(fairness: Mapping[str, Any]) -> str:
    """How the gate treated the groups it did not judge (empty when it judged every group)."""
    left = fairness.get("left_out") or {}
    if not left:
        return ""
    listed = "; ".join(f"{g!r}: {why}" for g, why in sorted(left.items()))
    return f" (left out of the gap, not judged: {listed})"


@dataclass(frozen=True)
class Latency:
    """Single-row latency percentiles in milliseconds, and how they were measured."""

    p50: float
    p99: float
    method: dict[str, Any]

    def percentiles(self) -> dict[str, float]:
        return {"p50": self.p50, "p99": self.p99}


def latency(
    predict_one: Callable[[int], object],
    rows: int,
    *,
    rounds: int = LATENCY_ROUNDS,
    samples: int = LATENCY_SAMPLES,
    warmup: int = LATENCY_WARMUP,
    budget_seconds: float = LATENCY_BUDGET_SECONDS,
) -> Latency:
    """Single-row inference latency in ms: the CPU time of each call, best of several rounds.

    On a shared machine a wall-clock p99 over a few hundred calls is about the third slowest
    call, so it measures the scheduler: a process descheduled for 30 ms during one call
    reads as a 30 ms model (measured: 0.16 ms at rest, 36 ms with the cores busy, for the
    same model). Taking the best of several short wall-clock rounds helps but is not enough
    on a saturated machine (every round caught a descheduling, 1 run in 5 here).

    So each call is timed by the CPU time of the calling thread (`time.thread_time`), which
    does not advance while the thread waits for a core. That is the model's whole cost: the
    endpoint's onnxruntime sessions run single-threaded on the caller's thread
    (deploy/inference.py sets intra- and inter-op threads to 1). A model that is really slow
    burns that CPU in every call and every round, so a strict gate still fails it. Calls are
    made in `rounds` rounds of `samples` after `warmup` calls; the round with the lowest p99
    is reported with its p50 (a round spoiled by a cold cache or a page fault is an outlier,
    not the model). The wall-clock percentiles of the best wall-clock round are recorded too,
    for information; they do not decide the gate.

    After `budget_seconds`, no new round starts once LATENCY_MIN_ROUNDS are done (a slow
    model would otherwise take minutes to time).
    """
    for i in range(min(warmup, rows)):
        predict_one(i)
    started = time.perf_counter()
    cpu_rounds: list[tuple[float, float]] = []
    wall_rounds: list[tuple[float, float]] = []
    call = 0
    for done in range(1, rounds + 1):
        cpu, wall = np.empty(samples), np.empty(samples)
        for k in range(samples):
            row = call % rows
            call += 1
            wall_start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
            predict_one(row)
            cpu[k] = (time.thread_time_ns() - cpu_start) / 1e6
            wall[k] = (time.perf_counter_ns() - wall_start) / 1e6
        cpu_rounds.append(_p50_p99(cpu))
        wall_rounds.append(_p50_p99(wall))
        budget_spent = time.perf_counter() - started > budget_seconds
        if done >= min(LATENCY_MIN_ROUNDS, rounds) and budget_spent:
            break
    p50, p99 = min(cpu_rounds, key=lambda r: r[1])
    wall_p50, wall_p99 = min(wall_rounds, key=lambda r: r[1])
    method = {
        "clock": "cpu time of the calling thread (time.thread_time), per single-row call",
        "warmup_calls": min(warmup, rows),
        "rounds": len(cpu_rounds),
        "samples_per_round": samples,
        "reported": "p50 and p99 of the round with the lowest p99",
        "round_p99_ms": [round(r[1], 6) for r in cpu_rounds],
        "wall_clock_best_round_ms": {"p50": round(wall_p50, 6), "p99": round(wall_p99, 6)},
    }
    return Latency(p50, p99, method)


def _p50_p99(timings: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(timings, 50)), float(np.percentile(timings, 99))


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
        elif candidate.fairness.get("insufficient_data"):
            checks.append(
                Check(
                    "fairness",
                    False,
                    f"fairness on {candidate.fairness['attribute']}: too little data to judge: "
                    f"{candidate.fairness['insufficient_data']}{_left_out(candidate.fairness)}",
                )
            )
        else:
            gap = candidate.fairness["equal_opportunity_difference"]
            ok = bool(gap <= gates.max_fairness_gap)
            checks.append(
                Check(
                    "fairness",
                    ok,
                    f"equal-opportunity difference on {candidate.fairness['attribute']} {gap:.4f} "
                    f"{'<=' if ok else '>'} {gates.max_fairness_gap}"
                    f"{_left_out(candidate.fairness)}",
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
