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

from ml import tasks
from ml.data import MISSING
from ml.spec import Gates

MAX_ROC_POINTS = 200
MAX_PLOT_POINTS = 500  # regression: predicted-vs-actual points kept for the report

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
    confusion: list[
        list[int]
    ]  # true class by row, predicted by column; binary [[tn, fp], [fn, tp]]
    roc: dict[str, list[float]]  # binary: {"fpr": [...], "tpr": [...]}
    fairness: dict[str, Any] | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    latency_method: dict[str, Any] = field(default_factory=dict)  # how latency_ms was measured
    task: str = tasks.BINARY
    labels: list[Any] | None = None  # the class labels in index order (None: a regression)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # multiclass recall
    points: dict[str, list[float]] = field(default_factory=dict)  # regression: actual, predicted

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
            name, gap = fairness_gap(fairness)
            fairness[name] = math.nan if gap is None else gap
            measure = fairness.get("measure", "tpr")
            # an undefined rate stays None (null): it is no number, not even NaN
            fairness["groups"] = {
                g: {**_nan_for_null(v), measure: v.get(measure)}
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
            name, gap = fairness_gap(self.fairness)
            flat[name] = gap
        for key, value in self.latency_ms.items():
            flat[f"latency_{key}_ms"] = value
        return {k: v for k, v in flat.items() if v is not None and math.isfinite(v)}


def score(
    y_true: np.ndarray,
    output: np.ndarray,
    sensitive: np.ndarray | None = None,
    sensitive_name: str | None = None,
    threshold: float = 0.5,
    min_group_size: int = 1,
    *,
    task: str = tasks.BINARY,
    labels: list[Any] | None = None,
) -> Evaluation:
    """Holdout metrics for `task`, and per-group fairness when there is a sensitive column.

    `y_true` holds class indexes (classification) or values (regression); `output` is what
    the model answers: probabilities per class (for binary, the positive class's column alone
    will do) or predicted values.
    """
    output = np.asarray(output, dtype=float)
    if task == tasks.REGRESSION:
        y_true = np.asarray(y_true, dtype=float)
        y_pred = output.reshape(-1)
        evaluation = _regression(y_true, y_pred)
    elif task == tasks.MULTICLASS:
        y_true = np.asarray(y_true).astype(int)
        evaluation = _multiclass(y_true, output, labels)
        y_pred = output.argmax(axis=1)
    else:
        y_true = np.asarray(y_true).astype(int)
        proba = output[:, -1] if output.ndim == 2 else output
        y_pred = (proba >= threshold).astype(int)
        evaluation = _binary(y_true, proba, y_pred)
    evaluation.task, evaluation.rows = task, len(y_true)
    evaluation.labels = labels
    if sensitive is not None:
        evaluation.fairness = group_fairness(
            y_true,
            y_pred,
            np.asarray(sensitive),
            sensitive_name or "group",
            min_group_size,
            task=task,
        )
    return evaluation


def _binary(y_true: np.ndarray, proba: np.ndarray, y_pred: np.ndarray) -> Evaluation:
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
        roc_curve,
    )

    both_classes = len(np.unique(y_true)) == 2
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, proba)) if both_classes else float("nan"),
        "log_loss": float(log_loss(y_true, np.clip(proba, 0, 1), labels=[0, 1])),
    }
    confusion = confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist()
    roc: dict[str, list[float]] = {"fpr": [], "tpr": []}
    if both_classes:
        fpr, tpr, _ = roc_curve(y_true, proba)
        keep = _spread(len(fpr), MAX_ROC_POINTS)
        roc = {"fpr": fpr[keep].round(6).tolist(), "tpr": tpr[keep].round(6).tolist()}
    return Evaluation(metrics, confusion, roc)


def _multiclass(y_true: np.ndarray, proba: np.ndarray, labels: list[Any] | None) -> Evaluation:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, recall_score

    k = proba.shape[1]
    classes = list(range(k))
    y_pred = proba.argmax(axis=1)
    # ONNX computes in float32: rows sum to 1 within ~1e-7, which log_loss warns about
    shares = np.clip(proba, 0, 1)
    shares = shares / np.maximum(shares.sum(axis=1, keepdims=True), 1e-12)
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(
            f1_score(y_true, y_pred, average="macro", labels=classes, zero_division=0)
        ),
        "f1_weighted": float(
            f1_score(y_true, y_pred, average="weighted", labels=classes, zero_division=0)
        ),
        "log_loss": float(log_loss(y_true, shares, labels=classes)),
    }
    recall = recall_score(y_true, y_pred, average=None, labels=classes, zero_division=0)
    support = np.bincount(y_true, minlength=k)
    names = [str(label) for label in (labels or classes)]
    per_class = {
        name: {"recall": float(r) if n else math.nan, "rows": int(n)}
        for name, r, n in zip(names, recall, support, strict=True)
    }
    confusion = confusion_matrix(y_true, y_pred, labels=classes).tolist()
    return Evaluation(metrics, confusion, {"fpr": [], "tpr": []}, per_class=per_class)


def _regression(y_true: np.ndarray, y_pred: np.ndarray) -> Evaluation:
    from sklearn.metrics import (
        mean_absolute_error,
        mean_absolute_percentage_error,
        mean_squared_error,
        r2_score,
    )

    metrics = {
        "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)) if len(y_true) >= 2 else math.nan,
        # a true value of 0 makes every percentage error undefined: left out, not huge
        "mape": float(mean_absolute_percentage_error(y_true, y_pred))
        if np.all(y_true != 0)
        else math.nan,
    }
    keep = _spread(len(y_true), MAX_PLOT_POINTS)
    points = {
        "actual": y_true[keep].round(6).tolist(),
        "predicted": y_pred[keep].round(6).tolist(),
    }
    return Evaluation(metrics, [], {"fpr": [], "tpr": []}, points=points)


def _spread(n: int, most: int) -> np.ndarray:
    """At most `most` indexes spread evenly over range(n) (a plot needs no more)."""
    return np.unique(np.linspace(0, n - 1, min(n, most)).astype(int)) if n else np.array([], int)


def fairness_gap(fairness: Mapping[str, Any]) -> tuple[str, float | None]:
    """The name of a fairness result's gap (per task, tasks.FAIRNESS) and its value."""
    name = fairness.get("gap_metric", tasks.FAIRNESS[tasks.BINARY].gap)
    return name, fairness.get(name)


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
    *,
    task: str = tasks.BINARY,
) -> dict[str, Any]:
    """A per-group measure and the largest gap between groups (fairlearn's MetricFrame).

    The measure is the task's (tasks.FAIRNESS): binary, the true-positive rate (the gap is
    the equal-opportunity difference); multiclass, the macro recall over the classes the group
    holds; regression, the mean absolute error (the gap is in the target's units).

    Every group is reported. A binary group's TPR is None ("undefined") when it has no
    positive rows (fairlearn reports 0.0 there, which is no rate at all). A group is judged,
    i.e. enters the gap, when it has at least `min_group_size` rows (the spec's
    gates.min_group_size) and, for binary, FAIRNESS_MIN_POSITIVES positive rows; `left_out`
    names every other group and why, so a tiny or positive-free group never decides the
    gate, and never silently. The gap is judged only when at least FAIRNESS_MIN_GROUPS known
    values are judged (rows with the attribute missing are their own group and may enter the
    gap, but never count towards that minimum). Otherwise `insufficient_data` says why and
    the gap is NaN: never a gap of 0.
    """
    from fairlearn.metrics import MetricFrame, count, selection_rate, true_positive_rate
    from sklearn.metrics import mean_absolute_error, recall_score

    fair = tasks.FAIRNESS[task]
    binary = task == tasks.BINARY
    if binary:
        y_true = np.asarray(y_true).astype(int)
        measures: dict[str, Any] = {"tpr": true_positive_rate, "selection_rate": selection_rate}
    elif task == tasks.MULTICLASS:
        measures = {
            "recall_macro": lambda t, p: recall_score(
                t, p, average="macro", labels=np.unique(t), zero_division=0
            )
        }
    else:
        measures = {"mae": mean_absolute_error}
    # one level for a missing attribute, as data.groups writes it (fairlearn refuses None)
    groups = np.array([MISSING if _is_missing(g) else g for g in groups], dtype=object)
    by_group = MetricFrame(
        metrics={**measures, "count": count},
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=groups,
    ).by_group
    positives = (
        MetricFrame(
            metrics=lambda t, p: int(np.sum(t)),
            y_true=y_true,
            y_pred=y_pred,
            sensitive_features=groups,
        ).by_group
        if binary
        else None
    )
    report: dict[str, dict[str, Any]] = {}
    values: dict[str, float] = {}
    left_out: dict[str, str] = {}
    known = 0
    for group in by_group.index:
        rows = int(by_group.loc[group, "count"])
        entry: dict[str, Any] = {}
        defined = True
        if binary:
            positive = int(positives.loc[group])
            defined = positive >= FAIRNESS_MIN_POSITIVES
            entry["selection_rate"] = float(by_group.loc[group, "selection_rate"])
            entry["positives"] = positive
        if not defined:
            status = "undefined"
            left_out[str(group)] = f"no positive rows ({rows} rows): TPR undefined"
        elif rows < min_group_size:
            status = "small"
            left_out[str(group)] = f"{rows} rows, fewer than min_group_size {min_group_size}"
        else:
            status = "judged"
        value = float(by_group.loc[group, fair.measure]) if defined else None
        report[str(group)] = {fair.measure: value, **entry, "count": rows, "status": status}
        if status == "judged":
            values[str(group)] = value
            known += not _is_missing(group)
    insufficient = None
    if known < FAIRNESS_MIN_GROUPS:
        seen = ", ".join(
            f"{g!r}: {v['count']} rows" + (f", {v['positives']} positive" if binary else "")
            for g, v in report.items()
        )
        needs = f" and {FAIRNESS_MIN_POSITIVES} positive row(s)" if binary else ""
        insufficient = (
            f"{known} group(s) of {attribute} with at least {min_group_size} row(s){needs} in "
            f"the holdout, at least {FAIRNESS_MIN_GROUPS} needed ({seen})"
        )
    return {
        "attribute": attribute,
        "measure": fair.measure,
        "gap_metric": fair.gap,
        "groups": report,
        "min_group_size": min_group_size,
        "left_out": left_out,
        # the largest difference in the measure between any two judged groups
        fair.gap: math.nan if insufficient else max(values.values()) - min(values.values()),
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
    """Run every gate of the spec; `champion` is the approved version scored on the same rows.

    Each metric is judged in its own direction (tasks.METRICS): `min_metrics` are floors,
    `max_metrics` ceilings, and the champion check asks the primary metric to be better by
    `min_improvement` (a lower RMSE is better); the primary metric defaults to the task's.
    """
    checks = []
    bounds = [(m, b, True) for m, b in gates.min_metrics.items()]
    bounds += [(m, b, False) for m, b in gates.max_metrics.items()]
    for metric, bound, floor in sorted(bounds):
        value = candidate.metrics.get(metric, float("nan"))
        ok = bool(value >= bound) if floor else bool(value <= bound)  # NaN fails
        sign = (">=" if ok else "<") if floor else ("<=" if ok else ">")
        name = f"{'min' if floor else 'max'}_{metric}"
        checks.append(Check(name, ok, f"{metric} {value:.4f} {sign} {bound}"))
    if champion is not None:
        checks.append(_champion_check(gates, candidate, champion))
    if gates.max_fairness_gap is not None:
        checks.append(_fairness_check(gates.max_fairness_gap, candidate))
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


def _champion_check(gates: Gates, candidate: Evaluation, champion: Evaluation) -> Check:
    if champion.task != candidate.task:
        # a change of task makes a new kind of model: nothing to compare it with
        return Check(
            "champion",
            True,
            f"champion is a {champion.task} model, the candidate {candidate.task}: not compared",
        )
    metric = gates.primary_metric or tasks.PRIMARY_METRIC[candidate.task]
    ours = candidate.metrics.get(metric, float("nan"))
    theirs = champion.metrics.get(metric, float("nan"))
    delta = tasks.better_by(metric, ours, theirs)
    ok = bool(delta >= gates.min_improvement)  # NaN fails
    way = "lower" if tasks.direction(metric) == tasks.LOWER else "higher"
    return Check(
        "champion",
        ok,
        f"{metric} {ours:.4f} vs champion {theirs:.4f} ({way} is better): better by "
        f"{delta:+.4f} {'>=' if ok else '<'} required {gates.min_improvement:+.4f}",
    )


def _fairness_check(limit: float, candidate: Evaluation) -> Check:
    fairness = candidate.fairness
    if fairness is None:
        return Check("fairness", False, "fairness gate set but no sensitive attribute scored")
    if fairness.get("insufficient_data"):
        return Check(
            "fairness",
            False,
            f"fairness on {fairness['attribute']}: too little data to judge: "
            f"{fairness['insufficient_data']}{_left_out(fairness)}",
        )
    name, gap = fairness_gap(fairness)
    ok = bool(gap <= limit)
    return Check(
        "fairness",
        ok,
        f"{tasks.TITLES[name]} on {fairness['attribute']} {gap:.4f} "
        f"{'<=' if ok else '>'} {limit}{_left_out(fairness)}",
    )
