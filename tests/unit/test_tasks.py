"""Tasks: the spec's task, targets checked against it, per-task metrics, gates in each
metric's own direction, per-task fairness, and a multiclass and a regression model scored
through the inference core."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deploy.inference import Model
from ml import data, train
from ml.errors import DataError, SpecError
from ml.evaluate import Evaluation, gate, score
from ml.spec import Gates, parse_spec


def spec_for(task: str, **extra):
    kind = "random_forest"
    raw = {
        "name": "t",
        "target": "y",
        "task": task,
        "features": [{"name": "x", "type": "numeric"}, {"name": "colour", "type": "categorical"}],
        "dataset": {"source": "inline"},
        "estimator": {"kind": kind, "params": {"n_estimators": 20, "max_depth": 4}},
        **extra,
    }
    return parse_spec(raw)


def frame(rows: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, rows)
    colour = rng.choice(["red", "green", "blue"], rows)
    return pd.DataFrame({"x": x, "colour": colour})


# --- the spec -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"task": "regression", "gates": {"min_metrics": {"rmse": 3}}},
            "gates.min_metrics: rmse is better when lower; put its bound under gates.max_metrics",
        ),
        (
            {"gates": {"max_metrics": {"roc_auc": 0.9}}},
            "gates.max_metrics: roc_auc is better when higher; put its bound under "
            "gates.min_metrics",
        ),
        (
            {"task": "multiclass", "gates": {"min_metrics": {"roc_auc": 0.9}}},
            "gates.min_metrics: unknown metric 'roc_auc' for task = 'multiclass'",
        ),
        (
            {"task": "multiclass", "positive_label": "yes"},
            "positive_label applies to task = 'binary' only",
        ),
        (
            {"task": "regression", "estimator": {"kind": "logistic_regression"}},
            "estimator.kind 'logistic_regression' does not take task = 'regression': use one of",
        ),
        ({"estimator": {"kind": "ridge"}}, "does not take task = 'binary'"),
        ({"task": "ordinal"}, "task: Input should be 'binary', 'multiclass' or 'regression'"),
        (
            {"task": "multiclass", "gates": {"primary_metric": "rmse"}},
            "gates.primary_metric: unknown metric 'rmse' for task = 'multiclass'",
        ),
    ],
)
def test_a_spec_that_does_not_fit_its_task_names_the_key(extra: dict, expected: str) -> None:
    raw = {
        "name": "t",
        "target": "y",
        "features": [{"name": "x", "type": "numeric"}],
        "dataset": {"source": "inline"},
        "estimator": {"kind": "random_forest"},
        **extra,
    }
    with pytest.raises(SpecError) as info:
        parse_spec(raw, origin="t.toml")
    assert info.value.args[0].startswith("t.toml: ")
    assert expected in str(info.value)


def test_each_task_has_its_primary_metric_and_a_regression_gap_in_target_units() -> None:
    assert spec_for("binary").primary_metric == "roc_auc"
    assert spec_for("multiclass").primary_metric == "f1_macro"
    regression = spec_for(
        "regression", sensitive_attribute="colour", gates={"max_fairness_gap": 12.5}
    )
    assert regression.primary_metric == "rmse"
    assert regression.gates.max_fairness_gap == 12.5  # MAE units, not a rate: no [0, 1] bound


# --- the target against the task -----------------------------------------------------------


def test_three_classes_for_a_binary_spec_suggest_multiclass() -> None:
    rows = frame().assign(y=np.resize(["cat", "dog", "eel"], 300))
    with pytest.raises(DataError) as info:
        data.validate(rows, spec_for("binary"), origin="pets.csv")
    assert str(info.value) == (
        "pets.csv: target 'y' must have exactly 2 classes for task = 'binary', found "
        "['cat', 'dog', 'eel']; it fits task = 'multiclass'"
    )


def test_a_measurement_for_a_classification_spec_suggests_regression() -> None:
    rows = frame().assign(y=np.linspace(10, 50, 300))
    for task in ("binary", "multiclass"):
        with pytest.raises(DataError) as info:
            data.validate(rows, spec_for(task), origin="m.csv")
        message = str(info.value)
        assert "300 distinct values, e.g. [10.0, " in message
        assert message.endswith("it looks like a regression target: set task = 'regression'")
        assert len(message) < 300


def test_text_for_a_regression_spec_suggests_a_classification() -> None:
    rows = frame().assign(y=np.resize(["low", "high"], 300))
    with pytest.raises(DataError) as info:
        data.validate(rows, spec_for("regression"), origin="r.csv")
    assert "holds text (['high', 'low']), not numbers" in str(info.value)
    assert str(info.value).endswith("it fits task = 'binary'")


def test_two_values_for_a_regression_spec_suggest_binary() -> None:
    rows = frame().assign(y=np.resize([0.0, 1.0], 300))
    with pytest.raises(DataError, match=r"2 distinct value.*it fits task = 'binary'"):
        data.validate(rows, spec_for("regression"))


def test_multiclass_labels_are_matched_by_value_and_kept_as_spelled() -> None:
    # 1, 2.0 and "3" in one CSV column: three labels, in numeric order
    target = pd.Series([2.0, 1.0, 3.0, 1.0, 2.0, 3.0])
    assert data.class_labels(target, spec_for("multiclass")) == [1.0, 2.0, 3.0]
    mixed = pd.Series([1, "1.0", 2, 3, "3", 2], dtype=object)
    assert data.class_labels(mixed, spec_for("multiclass")) == [1, 2, 3]
    encoded = data.encode_target(mixed, spec_for("multiclass"))
    assert encoded.tolist() == [0, 0, 1, 2, 2, 1]


# --- metrics, per task ------------------------------------------------------------------------


def test_multiclass_metrics_per_class_and_confusion() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.7, 0.2], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8],
         [0.2, 0.2, 0.6]]
    )  # fmt: skip
    result = score(y_true, proba, task="multiclass", labels=["a", "b", "c"])
    assert result.metrics["accuracy"] == pytest.approx(5 / 6)
    assert result.confusion == [[2, 0, 0], [1, 1, 0], [0, 0, 2]]
    assert result.per_class["b"] == {"recall": 0.5, "rows": 2}
    # macro F1: class a (p 2/3, r 1) 0.8, b (p 1, r 0.5) 2/3, c 1.0
    assert result.metrics["f1_macro"] == pytest.approx((0.8 + 2 / 3 + 1.0) / 3)
    expected_loss = -np.mean(np.log([0.8, 0.6, 0.7, 0.4, 0.8, 0.6]))
    assert result.metrics["log_loss"] == pytest.approx(expected_loss)


def test_regression_metrics_and_undefined_mape() -> None:
    y_true = np.array([10.0, 20.0, 30.0, 40.0])
    y_pred = np.array([11.0, 18.0, 30.0, 44.0])  # errors 1, -2, 0, 4
    result = score(y_true, y_pred, task="regression")
    assert result.metrics["rmse"] == pytest.approx(math.sqrt((1 + 4 + 0 + 16) / 4))
    assert result.metrics["mae"] == pytest.approx(7 / 4)
    assert result.metrics["mape"] == pytest.approx((0.1 + 0.1 + 0 + 0.1) / 4)
    assert result.points == {"actual": y_true.tolist(), "predicted": y_pred.tolist()}
    with_zero = score(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.0, 2.0]), task="regression")
    assert math.isnan(with_zero.metrics["mape"])
    assert "mape" not in with_zero.flat_metrics()  # undefined: absent, not huge


# --- gates in each metric's own direction ----------------------------------------------------


def regression_eval(rmse: float, r2: float = 0.5) -> Evaluation:
    return Evaluation({"rmse": rmse, "mae": rmse, "r2": r2}, [], {"fpr": [], "tpr": []},
                      task="regression")  # fmt: skip


def test_a_ceiling_fails_above_and_passes_at_or_below() -> None:
    gates = Gates(max_metrics={"rmse": 5.0}, min_metrics={"r2": 0.4})
    assert gate(gates, regression_eval(5.0)).passed
    verdict = gate(gates, regression_eval(5.5, r2=0.3))
    assert verdict.reasons == ["r2 0.3000 < 0.4", "rmse 5.5000 > 5.0"]
    assert not gate(gates, regression_eval(float("nan"))).passed  # NaN never passes


def test_the_champion_check_follows_the_primary_metric_direction() -> None:
    gates = Gates(min_improvement=0.5)  # rmse must be at least 0.5 lower
    assert gate(gates, regression_eval(4.0), regression_eval(4.6)).passed
    verdict = gate(gates, regression_eval(4.2), regression_eval(4.6))
    (reason,) = verdict.reasons
    assert reason == (
        "rmse 4.2000 vs champion 4.6000 (lower is better): better by +0.4000 < required +0.5000"
    )
    assert not gate(Gates(), regression_eval(4.7), regression_eval(4.6)).passed


def test_a_champion_of_another_task_is_not_compared() -> None:
    binary = Evaluation({"roc_auc": 0.9}, [[1, 0], [0, 1]], {"fpr": [], "tpr": []})
    verdict = gate(Gates(), regression_eval(4.0), binary)
    (check,) = verdict.checks
    assert check.passed and "not compared" in check.detail


# --- fairness per task ------------------------------------------------------------------------


def test_regression_fairness_is_the_mae_gap_between_judged_groups() -> None:
    y_true = np.array([10.0] * 40 + [10.0] * 40 + [10.0] * 5)
    y_pred = np.array([11.0] * 40 + [14.0] * 40 + [30.0] * 5)
    groups = np.array(["a"] * 40 + ["b"] * 40 + ["tiny"] * 5, dtype=object)
    result = score(y_true, y_pred, groups, "site", min_group_size=30, task="regression")
    fairness = result.fairness
    assert fairness["groups"]["a"]["mae"] == pytest.approx(1.0)
    assert fairness["groups"]["b"]["mae"] == pytest.approx(4.0)
    assert fairness["groups"]["tiny"]["status"] == "small"  # MAE 20 never decides the gate
    assert fairness["mae_difference"] == pytest.approx(3.0)
    assert result.flat_metrics()["mae_difference"] == pytest.approx(3.0)
    verdict = gate(Gates(max_fairness_gap=2.5), result)
    (reason,) = verdict.reasons
    assert reason.startswith("MAE difference on site 3.0000 > 2.5")
    assert "'tiny': 5 rows, fewer than min_group_size 30" in reason


def test_multiclass_fairness_is_the_macro_recall_gap() -> None:
    y_true = np.array([0, 1, 2] * 20 + [0, 1, 2] * 20)
    y_pred = np.array([0, 1, 2] * 20 + [0, 0, 2] * 20)  # group b never finds class 1
    groups = np.array(["a"] * 60 + ["b"] * 60, dtype=object)
    proba = np.eye(3)[y_pred]
    result = score(y_true, proba, groups, "site", min_group_size=30, task="multiclass")
    assert result.fairness["groups"]["a"]["recall_macro"] == pytest.approx(1.0)
    assert result.fairness["groups"]["b"]["recall_macro"] == pytest.approx(2 / 3)
    assert result.fairness["recall_difference"] == pytest.approx(1 / 3)
    assert Evaluation.from_dict(result.to_dict()).fairness["recall_difference"] == pytest.approx(
        1 / 3
    )


# --- a multiclass and a regression model through the inference core ---------------------------


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_a_model_of_each_task_answers_through_the_inference_core(task: str, tmp_path: Path) -> None:
    rows = frame(seed=11)
    if task == "multiclass":
        rows["y"] = np.where(rows["x"] > 0.5, "high", np.where(rows["x"] < -0.5, "low", "mid"))
    else:
        rows["y"] = 3.0 * rows["x"] + (rows["colour"] == "red") * 2.0 + 10.0
    spec = spec_for(task)
    result = train.fit(spec, rows, tmp_path / "artifact", run_id="r1")
    model = Model.load(tmp_path / "artifact")
    request = [{"x": 1.5, "colour": "red"}, {"x": -1.5, "colour": None}]
    answer = model.predict_payload({"instances": request})
    assert answer["task"] == task
    if task == "multiclass":
        assert answer["classes"] == ["high", "low", "mid"]
        assert answer["predictions"] == ["high", "low"]
        assert result.card["onnx_parity_max_abs_diff"] < 1e-5
    else:
        assert answer["classes"] is None and answer["probabilities"] is None
        assert answer["predictions"][0] == pytest.approx(16.5, abs=1.5)
        assert answer["predictions"][1] == pytest.approx(5.5, abs=1.5)
        assert result.card["onnx_parity_max_abs_diff"] < 1e-4
