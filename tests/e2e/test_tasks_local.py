"""Per task, the whole pipeline on the local stack from the shipped example spec: train, gate,
register, deploy, answer through the endpoint, and a second run judged against the champion
in the primary metric's own direction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml import datasets, lifecycle, report
from ml.clouds.base import APPROVED, Stack
from ml.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _row(name: str, index: int) -> dict:
    spec = load_spec(EXAMPLES / f"{name}.toml")
    frame = datasets.load_builtin(spec.dataset.source)
    return {c: float(frame[c].iloc[index]) for c in spec.feature_names}


def test_multiclass_pipeline_answers_by_label(local_stack: Stack, tmp_path: Path) -> None:
    spec = load_spec(EXAMPLES / "iris.toml")
    first = lifecycle.pipeline(local_stack, spec)
    assert first.version.status == APPROVED and first.deployment is not None
    card = first.outcome.card
    assert card["task"] == "multiclass"
    assert card["labels"] == ["setosa", "versicolor", "virginica"]
    assert set(card["metrics"]) >= {"accuracy", "f1_macro", "f1_weighted", "log_loss"}
    per_class = card["evaluation"]["per_class"]
    assert set(per_class) == {"setosa", "versicolor", "virginica"}
    assert sum(v["rows"] for v in per_class.values()) == card["data"]["test_rows"]
    assert len(card["evaluation"]["confusion"]) == 3

    # messy column names in the request, species by name in the answer
    answer = local_stack.endpoint.invoke("iris", [_row("iris", 0), _row("iris", 149)])
    assert answer["task"] == "multiclass"
    assert answer["classes"] == ["setosa", "versicolor", "virginica"]
    assert answer["predictions"] == ["setosa", "virginica"]
    assert [len(p) for p in answer["probabilities"]] == [3, 3]
    assert all(sum(p) == pytest.approx(1, abs=1e-5) for p in answer["probabilities"])

    second = lifecycle.pipeline(local_stack, spec)
    (champion,) = [c for c in second.report.verdict.checks if c.name == "champion"]
    assert champion.passed and "f1_macro" in champion.detail

    page = report.render(
        model="iris",
        run_id=second.outcome.run_id,
        stack="local:dev",
        candidate=second.report.candidate,
        verdict=second.report.verdict,
        champion=second.report.champion,
        champion_version=1,
        card=second.outcome.card,
    )
    assert 'alt="Confusion matrix"' in page and "<h2>Per class</h2>" in page
    assert "ROC" not in page


def test_regression_pipeline_answers_a_value(local_stack: Stack, tmp_path: Path) -> None:
    spec = load_spec(EXAMPLES / "diabetes.toml")
    first = lifecycle.pipeline(local_stack, spec)
    assert first.version.status == APPROVED and first.deployment is not None
    card = first.outcome.card
    assert card["task"] == "regression" and card["labels"] is None
    assert set(card["metrics"]) >= {"rmse", "mae", "r2", "mape", "mae_difference"}
    fairness = card["evaluation"]["fairness"]
    assert fairness["measure"] == "mae" and set(fairness["groups"]) == {"1.0", "2.0"}

    answer = local_stack.endpoint.invoke("diabetes", [_row("diabetes", 0)])
    assert answer["task"] == "regression"
    assert answer["classes"] is None and answer["probabilities"] is None
    (value,) = answer["predictions"]
    assert isinstance(value, float) and 25 <= value <= 346  # within the target's range

    # the baseline describes the predicted value, for drift on what the model answers
    stored = local_stack.store.get_artifact(first.version.artifact_uri, tmp_path / "v1")
    baseline = json.loads((stored / "baseline.json").read_text())
    assert baseline["prediction"]["value"]["type"] == "numeric"

    # a challenger with a worse rmse than the champion's fails, judged lower-is-better
    worse = spec.model_copy(
        update={
            "estimator": spec.estimator.model_copy(
                update={"params": {"n_estimators": 3, "max_depth": 1, "learning_rate": 0.05}}
            ),
            "gates": spec.gates.model_copy(update={"max_metrics": {}, "min_metrics": {}}),
        }
    )
    outcome = lifecycle.train(local_stack, worse)
    verdict = lifecycle.evaluate(local_stack, worse, outcome).verdict
    (champion,) = [c for c in verdict.checks if c.name == "champion"]
    assert not champion.passed
    assert "rmse" in champion.detail and "lower is better" in champion.detail
    assert outcome.card["metrics"]["rmse"] > card["metrics"]["rmse"]
