"""deploy/inference.py: request validation names `instances[i].field`; predict scores rows."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deploy.inference import RequestError
from ml import artifact, data, datasets
from ml.spec import parse_spec
from tests.conftest import spec_dict


@pytest.fixture(scope="module")
def model(trained_artifact: Path):
    return artifact.load(trained_artifact).model


def row(**changes: Any) -> dict[str, Any]:
    base = {
        "age": 41,
        "income": 38000.5,
        "debt_ratio": 0.31,
        "late_payments": 1,
        "credit_lines": 4,
        "employment": "salaried",
    }
    base.update(changes)
    return base


def test_predict_returns_label_and_probability(model) -> None:
    results = model.predict([row(), row(debt_ratio=0.95, late_payments=6, employment="unemployed")])
    assert len(results) == 2
    for result in results:
        assert set(result) == {"label", "probability"}
        assert result["label"] in (0, 1)
        assert 0.0 <= result["probability"] <= 1.0
        assert result["label"] == int(result["probability"] >= 0.5)
    assert results[1]["probability"] > results[0]["probability"]  # riskier applicant


def test_threshold(model) -> None:
    assert model.predict([row()], threshold=0.0)[0]["label"] == 1
    assert model.predict([row()], threshold=1.01)[0]["label"] == 0


def test_predictions_match_batch_scoring(model) -> None:
    spec = parse_spec(spec_dict())
    frame = data.validate(datasets.credit(rows=60, seed=11), spec)
    records = frame[spec.feature_names].replace({np.nan: None}).to_dict("records")
    one_by_one = [model.predict([r])[0]["probability"] for r in records]
    batch = model.predict_proba(model.feeds_from_columns({c: frame[c] for c in spec.feature_names}))
    np.testing.assert_allclose(one_by_one, batch, atol=1e-6)


def test_null_is_allowed(model) -> None:
    (result,) = model.predict([row(income=None, employment=None)])
    assert 0.0 <= result["probability"] <= 1.0
    feeds = model.feeds_from_rows([row(income=None, employment=None)])
    assert math.isnan(feeds["income"][0, 0])
    assert feeds["employment"][0, 0] == data.MISSING


def test_ints_and_floats_both_count_as_numbers(model) -> None:
    assert model.predict([row(age=41)]) == model.predict([row(age=41.0)])


def test_unseen_category_is_scored(model) -> None:
    (result,) = model.predict([row(employment="astronaut")])
    assert 0.0 <= result["probability"] <= 1.0


def test_unknown_field(model) -> None:
    with pytest.raises(
        RequestError, match=r"^instances\[1\]: unknown field\(s\) \['customer_id'\]"
    ):
        model.feeds_from_rows([row(), row(customer_id="C1")])


def test_missing_field(model) -> None:
    incomplete = row()
    del incomplete["debt_ratio"]
    with pytest.raises(RequestError, match=r"^instances\[2\]\.debt_ratio: required"):
        model.predict([row(), row(), incomplete])


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("income", "38000", "expected a number, got '38000'"),
        ("age", True, "expected a number, got True"),
        ("late_payments", [1], "expected a number, got \\[1\\]"),
        ("employment", 3, "expected a string, got 3"),
        ("employment", 1.5, "expected a string, got 1.5"),
        ("employment", False, "expected a string, got False"),
    ],
)
def test_wrong_type(model, field: str, value: Any, expected: str) -> None:
    with pytest.raises(RequestError, match=rf"^instances\[1\]\.{field}: {expected}"):
        model.predict([row(), row(**{field: value})])


@pytest.mark.parametrize("instances", [[], None, {"age": 1}, "rows"])
def test_empty_or_not_a_list(model, instances: Any) -> None:
    with pytest.raises(RequestError, match="non-empty list"):
        model.predict(instances)


def test_row_not_an_object(model) -> None:
    with pytest.raises(RequestError, match=r"^instances\[0\]: expected an object, got list"):
        model.predict([[41, 38000.5]])


def test_request_error_is_a_value_error() -> None:
    assert issubclass(RequestError, ValueError)
