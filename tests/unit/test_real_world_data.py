"""Data as people bring it: column names that are not identifiers, a sensitive attribute
that is also a (numeric) feature; trained with ml.train.fit, scored through the inference
core and the Service with the original column names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from contract import serving
from deploy.inference import Model
from deploy.service import Service
from ml import artifact, train
from ml.spec import parse_spec

MESSY = ["sepal length (cm)", "petal.width", "2nd reading", "kind of leaf", "religious"]


def messy_frame(rows: int = 400, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "sepal length (cm)": rng.normal(5.8, 0.8, rows),
            "petal.width": rng.normal(1.2, 0.7, rows),
            "2nd reading": rng.normal(0, 1, rows),
            "kind of leaf": rng.choice(["round", "long leaf"], rows),
            "religious": rng.integers(1, 5, rows).astype(float),  # 1.0 .. 4.0
        }
    )
    score = frame["petal.width"] + 0.5 * frame["2nd reading"] + rng.normal(0, 0.3, rows)
    frame["is virginica?"] = (score > 1.2).astype(float)  # 0.0 / 1.0, as CSV exports have it
    return frame


def messy_spec(**extra) -> dict:
    return {
        "name": "leaves",
        "target": "is virginica?",
        "positive_label": 1,
        "sensitive_attribute": "religious",
        "features": [
            {"name": name, "type": "categorical" if name == "kind of leaf" else "numeric"}
            for name in MESSY
        ],
        "dataset": {"source": "inline"},
        "estimator": {"kind": "logistic_regression", "params": {"max_iter": 500}},
        **extra,
    }


@pytest.fixture(scope="module")
def messy_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("messy") / "artifact"
    train.fit(parse_spec(messy_spec()), messy_frame(), out, run_id="messy-1")
    return out


ROW = {
    "sepal length (cm)": 6.1,
    "petal.width": 2.0,
    "2nd reading": 0.4,
    "kind of leaf": "long leaf",
    "religious": 3,
}


def test_onnx_inputs_are_safe_names_mapped_both_ways(messy_artifact: Path) -> None:
    card = json.loads((messy_artifact / artifact.CARD).read_text())
    graph_inputs = [i.name for i in onnx.load(messy_artifact / artifact.ONNX).graph.input]
    assert sorted(graph_inputs) == ["kind_of_leaf", "numeric"]
    names = card["input_names"]
    assert names["by_column"]["sepal length (cm)"] == "sepal_length_cm"
    assert names["by_column"]["2nd reading"] == "c_2nd_reading"
    assert {v: k for k, v in names["by_column"].items()} == names["by_onnx_name"]
    schema = {f["name"]: f["onnx_name"] for f in card["input_schema"]["features"]}
    assert schema == names["by_column"]
    assert card["labels"] == [0.0, 1.0]


def test_scored_through_the_core_and_the_service_with_the_original_names(
    messy_artifact: Path,
) -> None:
    model = Model.load(messy_artifact, version=1)
    answer = model.predict_payload({"instances": [ROW, {**ROW, "petal.width": -1.0}]})
    high, low = (p[1] for p in answer["probabilities"])
    assert high > 0.5 > low
    columns = {k: [v] for k, v in ROW.items()}
    assert model.predict_payload({"inputs": columns})["probabilities"][0][1] == pytest.approx(high)
    response = Service(model).handle(
        "POST",
        serving.PREDICT_PATH,
        {"Content-Type": "application/json"},
        json.dumps({"instances": [ROW]}).encode(),
    )
    assert response.status == 200, response.body
    assert json.loads(response.body)["probabilities"][0][1] == pytest.approx(high)


def test_a_numeric_sensitive_feature_keeps_its_type(messy_artifact: Path) -> None:
    card = json.loads((messy_artifact / artifact.CARD).read_text())
    feature = next(f for f in card["input_schema"]["features"] if f["name"] == "religious")
    assert feature["type"] == "numeric" and feature["dtype"] == "float32"
    assert feature["min"] == 1.0 and feature["max"] == 4.0
    assert set(card["evaluation"]["fairness"]["groups"]) == {"1.0", "2.0", "3.0", "4.0"}
    model = Model.load(messy_artifact)
    assert model.predict_payload({"instances": [{**ROW, "religious": 3.0}]})["predictions"]
