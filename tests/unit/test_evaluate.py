"""Metrics, fairness and the gate: every check can block, and says which metric did."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from ml.evaluate import Evaluation, gate, latency, score
from ml.spec import Gates

Y_TRUE = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0])
PROBA = np.array([0.9, 0.8, 0.4, 0.6, 0.3, 0.55, 0.1, 0.2, 0.7, 0.45, 0.35, 0.65])


def evaluation(**metrics: float) -> Evaluation:
    base = {"accuracy": 0.8, "precision": 0.8, "recall": 0.8, "f1": 0.8, "roc_auc": 0.85}
    return Evaluation({**base, **metrics}, [[0, 0], [0, 0]], {"fpr": [], "tpr": []})


def test_metrics_match_scikit_learn() -> None:
    result = score(Y_TRUE, PROBA)
    predicted = (PROBA >= 0.5).astype(int)
    assert result.metrics["accuracy"] == pytest.approx(skm.accuracy_score(Y_TRUE, predicted))
    assert result.metrics["precision"] == pytest.approx(skm.precision_score(Y_TRUE, predicted))
    assert result.metrics["recall"] == pytest.approx(skm.recall_score(Y_TRUE, predicted))
    assert result.metrics["f1"] == pytest.approx(skm.f1_score(Y_TRUE, predicted))
    assert result.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(Y_TRUE, PROBA))
    # and against the counts by hand: tp=4 (0.9, 0.8, 0.6, 0.7), fp=2 (0.55, 0.65)
    assert result.metrics["precision"] == pytest.approx(4 / 6)
    assert result.metrics["recall"] == pytest.approx(4 / 6)
    assert result.rows == len(Y_TRUE)


def test_confusion_matrix_layout() -> None:
    result = score(Y_TRUE, PROBA)
    assert result.confusion == [[4, 2], [2, 4]]  # [[tn, fp], [fn, tp]]
    assert score([0, 0, 1], [0.9, 0.1, 0.2]).confusion == [[1, 1], [1, 0]]


def test_threshold_moves_predictions() -> None:
    assert score(Y_TRUE, PROBA, threshold=0.0).metrics["recall"] == 1.0
    assert score(Y_TRUE, PROBA, threshold=0.95).metrics["recall"] == 0.0


def test_roc_curve_is_monotone_and_bounded() -> None:
    roc = score(Y_TRUE, PROBA).roc
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0
    assert roc["tpr"][-1] == 1.0
    assert roc["fpr"] == sorted(roc["fpr"])
    assert roc["tpr"] == sorted(roc["tpr"])


def test_single_class_holdout_gives_nan_auc() -> None:
    result = score([1, 1, 1], [0.9, 0.2, 0.7])
    assert math.isnan(result.metrics["roc_auc"])
    assert result.roc == {"fpr": [], "tpr": []}


def test_fairness_gap_on_known_tprs() -> None:
    # group a: 4 positives, 3 caught (TPR 0.75); group b: 4 positives, 1 caught (TPR 0.25)
    y_true = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0])
    y_hat = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0])
    groups = np.array(["a"] * 6 + ["b"] * 6)
    result = score(y_true, y_hat.astype(float), groups, "gender")
    fairness = result.fairness
    assert fairness is not None
    assert fairness["attribute"] == "gender"
    assert fairness["groups"]["a"]["tpr"] == pytest.approx(0.75)
    assert fairness["groups"]["b"]["tpr"] == pytest.approx(0.25)
    assert fairness["groups"]["a"]["selection_rate"] == pytest.approx(4 / 6)
    assert fairness["groups"]["b"]["count"] == 6
    assert fairness["equal_opportunity_difference"] == pytest.approx(0.5)
    assert result.flat_metrics()["equal_opportunity_difference"] == pytest.approx(0.5)


def test_fairness_three_groups_takes_the_largest_gap() -> None:
    y_true = np.ones(9, dtype=int)
    y_hat = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0])
    groups = np.array(["x"] * 3 + ["y"] * 3 + ["z"] * 3)
    fairness = score(y_true, y_hat, groups).fairness
    assert fairness["equal_opportunity_difference"] == pytest.approx(1 - 1 / 3)


def test_evaluation_round_trips_through_a_dict() -> None:
    result = score(Y_TRUE, PROBA, np.array(["a", "b"] * 6), "g")
    result.latency_ms = {"p50": 0.1, "p99": 0.3}
    again = Evaluation.from_dict(result.to_dict())
    assert again == result
    flat = again.flat_metrics()
    assert flat["latency_p99_ms"] == 0.3
    assert flat["roc_auc"] == result.metrics["roc_auc"]


def test_latency_percentiles() -> None:
    calls = []
    timings = latency(calls.append, rows=5, samples=40)
    assert len(calls) == 5 + 40  # warm-up on each row, then the samples
    assert set(calls) == set(range(5))
    assert 0 <= timings["p50"] <= timings["p99"]


def test_passing_case_has_no_reasons() -> None:
    gates = Gates(
        min_metrics={"roc_auc": 0.8, "recall": 0.7},
        min_improvement=0.0,
        max_fairness_gap=0.2,
        max_p99_latency_ms=10,
    )
    candidate = evaluation(roc_auc=0.86)
    candidate.fairness = {"attribute": "gender", "equal_opportunity_difference": 0.1}
    candidate.latency_ms = {"p50": 1.0, "p99": 2.0}
    verdict = gate(gates, candidate, champion=evaluation(roc_auc=0.85))
    assert verdict.passed
    assert verdict.reasons == []
    assert [c.name for c in verdict.checks] == [
        "min_recall",
        "min_roc_auc",
        "champion",
        "fairness",
        "latency",
    ]
    assert verdict.to_dict()["passed"] is True


@pytest.mark.parametrize("metric", ["accuracy", "precision", "recall", "f1", "roc_auc"])
def test_each_min_metric_blocks_and_names_the_metric(metric: str) -> None:
    gates = Gates(
        min_metrics={"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "roc_auc": 0.5}
    )
    verdict = gate(gates, evaluation(**{metric: 0.4}))
    assert not verdict.passed
    assert len(verdict.reasons) == 1
    assert verdict.reasons[0].startswith(f"{metric} 0.4000 < 0.5")


def test_metric_exactly_at_the_minimum_passes() -> None:
    assert gate(Gates(min_metrics={"recall": 0.8}), evaluation(recall=0.8)).passed


def test_worse_challenger_fails_the_champion_check() -> None:
    gates = Gates(primary_metric="f1", min_improvement=0.0)
    verdict = gate(gates, evaluation(f1=0.70), champion=evaluation(f1=0.75))
    assert not verdict.passed
    (reason,) = verdict.reasons
    assert reason.startswith("f1 0.7000 vs champion 0.7500")
    assert "-0.0500 < required +0.0000" in reason


def test_tolerated_regression_passes_the_champion_check() -> None:
    gates = Gates(primary_metric="roc_auc", min_improvement=-0.01)
    assert gate(gates, evaluation(roc_auc=0.845), champion=evaluation(roc_auc=0.85)).passed
    assert not gate(gates, evaluation(roc_auc=0.835), champion=evaluation(roc_auc=0.85)).passed


def test_required_improvement_blocks_an_equal_challenger() -> None:
    gates = Gates(min_improvement=0.01)
    verdict = gate(gates, evaluation(), champion=evaluation())
    assert not verdict.passed
    assert "roc_auc" in verdict.reasons[0]


def test_fairness_gap_blocks() -> None:
    candidate = evaluation()
    candidate.fairness = {"attribute": "gender", "equal_opportunity_difference": 0.31}
    verdict = gate(Gates(max_fairness_gap=0.15), candidate)
    assert verdict.reasons == ["equal-opportunity difference on gender 0.3100 > 0.15"]


def test_fairness_gate_without_scores_blocks() -> None:
    verdict = gate(Gates(max_fairness_gap=0.15), evaluation())
    assert not verdict.passed
    assert "fairness" in verdict.reasons[0]


def test_latency_blocks_and_missing_latency_blocks() -> None:
    slow = evaluation()
    slow.latency_ms = {"p50": 3.0, "p99": 40.0}
    verdict = gate(Gates(max_p99_latency_ms=25), slow)
    assert verdict.reasons == ["p99 latency 40.000 ms > 25.0 ms"]
    unmeasured = gate(Gates(max_p99_latency_ms=25), evaluation())
    assert not unmeasured.passed
    assert "p99 latency nan" in unmeasured.reasons[0]


def test_nan_metric_fails() -> None:
    verdict = gate(Gates(min_metrics={"roc_auc": 0.5}), evaluation(roc_auc=float("nan")))
    assert not verdict.passed
    assert verdict.reasons[0].startswith("roc_auc nan <")


def test_nan_metric_fails_the_champion_check() -> None:
    verdict = gate(Gates(min_improvement=-1.0), evaluation(roc_auc=float("nan")), evaluation())
    assert not verdict.passed
    assert "vs champion" in verdict.reasons[0]


def test_absent_metric_fails() -> None:
    candidate = Evaluation({"accuracy": 0.9}, [[0, 0], [0, 0]], {"fpr": [], "tpr": []})
    verdict = gate(Gates(min_metrics={"recall": 0.1}), candidate)
    assert not verdict.passed
    assert verdict.reasons[0].startswith("recall nan")


def test_every_failure_is_reported_together() -> None:
    candidate = evaluation(roc_auc=0.5, accuracy=0.5)
    candidate.fairness = {"attribute": "gender", "equal_opportunity_difference": 0.9}
    gates = Gates(min_metrics={"roc_auc": 0.7, "accuracy": 0.7}, max_fairness_gap=0.1)
    verdict = gate(gates, candidate, champion=evaluation())
    assert len(verdict.reasons) == 4
    assert {c.name for c in verdict.checks if not c.passed} == {
        "min_accuracy",
        "min_roc_auc",
        "champion",
        "fairness",
    }
