"""deploy/inference.py: the schema a request must meet (errors name the field), the answer's
shape, and the thin `predict` the lifecycle's latency gate uses."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.serving import MAX_ECHO_CHARS
from deploy.inference import MISSING, Model, RequestError
from ml import data, datasets
from ml.spec import parse_spec
from tests.conftest import spec_dict


@pytest.fixture(scope="module")
def model(trained_artifact: Path) -> Model:
    return Model.load(trained_artifact, version=7)


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
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()


def refused(model: Model, payload: Any, **kw: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        model.predict_payload(payload, **kw)
    return caught.value


# --- the answer -------------------------------------------------------------------------------


def test_answer_shape_for_records(model: Model) -> None:
    risky = row(debt_ratio=0.95, late_payments=6, employment="unemployed")
    answer = model.predict_payload({"instances": [row(), risky]}, request_id="r-1")
    assert list(answer) == [
        "model", "version", "request_id", "task", "classes", "predictions", "probabilities",
    ]  # fmt: skip
    assert answer["model"] == "credit"
    assert answer["version"] == 7
    assert answer["request_id"] == "r-1"
    assert answer["task"] == "binary"
    assert answer["classes"] == [0, 1]
    assert len(answer["probabilities"]) == 2
    for prediction, shares in zip(answer["predictions"], answer["probabilities"], strict=True):
        assert len(shares) == 2
        assert math.isclose(sum(shares), 1.0, abs_tol=1e-5)
        assert prediction == answer["classes"][int(np.argmax(shares))]
    assert answer["probabilities"][1][1] > answer["probabilities"][0][1]  # riskier applicant


def test_columns_give_the_same_answer_as_records(model: Model) -> None:
    rows = [row(), row(age=63, employment=None, income=None), row(late_payments=5)]
    columns = {name: [r[name] for r in rows] for name in rows[0]}
    assert model.predict_payload({"inputs": columns}) == model.predict_payload({"instances": rows})


def test_records_match_batch_scoring(model: Model) -> None:
    spec = parse_spec(spec_dict())
    frame = data.validate(datasets.credit(rows=60, seed=11), spec)
    frame = frame[frame["employment"].isin(["salaried", "self_employed", "unemployed"])]
    records = frame[spec.feature_names].replace({np.nan: None}).to_dict("records")
    one_by_one = [model.predict_payload({"instances": [r]})["probabilities"][0][1] for r in records]
    batch = model.predict_proba(model.feeds_from_columns({c: frame[c] for c in spec.feature_names}))
    np.testing.assert_allclose(one_by_one, batch, atol=1e-6)


def test_null_is_the_missing_value(model: Model) -> None:
    answer = model.predict_payload({"instances": [row(income=None, employment=None)]})
    assert 0.0 <= answer["probabilities"][0][1] <= 1.0
    # null feeds ONNX what training fed for a missing value: NaN (imputed), the missing level
    numeric, strings = model._from_records([row(income=None, employment=None)], max_rows=1)
    assert math.isnan(numeric[0, 1])
    assert strings["employment"][0, 0] == MISSING


def test_ints_and_floats_both_count_as_numbers(model: Model) -> None:
    assert model.predict_payload({"instances": [row(age=41)]}) == model.predict_payload(
        {"instances": [row(age=41.0)]}
    )


def test_personal_data_columns_may_ride_along_and_change_nothing(model: Model) -> None:
    plain = model.predict_payload({"instances": [row()]})
    assert model.predict_payload({"instances": [row(customer_id="C-1")]}) == plain
    columns = {k: [v] for k, v in row(customer_id="C-1").items()}
    assert model.predict_payload({"inputs": columns}) == plain


def test_predict_keeps_label_and_probability(model: Model) -> None:
    (result,) = model.predict([row()])
    assert set(result) == {"label", "probability"}
    assert result["label"] == int(result["probability"] >= 0.5)
    assert model.predict([row()], threshold=0.0)[0]["label"] == 1
    assert model.predict([row()], threshold=1.01)[0]["label"] == 0


# --- what is refused, and how it is named ------------------------------------------------------


def test_unknown_field(model: Model) -> None:
    error = refused(model, {"instances": [row(), row(nickname="Al")]})
    assert error.status == 422
    assert error.field == "instances[1].nickname"
    assert error.message.startswith("instances[1].nickname: unknown field")


def test_missing_field(model: Model) -> None:
    error = refused(model, {"instances": [row(), row(), row(debt_ratio=DROP)]})
    assert (error.status, error.field) == (422, "instances[2].debt_ratio")
    assert "required" in error.message
    error = refused(model, {"instances": [row(employment=DROP)]})
    assert error.field == "instances[0].employment"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("income", "38000", "expected a number, got '38000'"),
        ("age", True, "expected a number, got True"),
        ("late_payments", [1], "expected a number, got [1]"),
        ("late_payments", {"n": 1}, "expected a number, got {'n': 1}"),
        ("employment", 3, "expected a string, got 3"),
        ("employment", 1.5, "expected a string, got 1.5"),
        ("employment", False, "expected a string, got False"),
    ],
)
def test_wrong_type(model: Model, field: str, value: Any, expected: str) -> None:
    error = refused(model, {"instances": [row(), row(**{field: value})]})
    assert (error.status, error.field) == (422, f"instances[1].{field}")
    assert error.message == f"instances[1].{field}: {expected}"


@pytest.mark.parametrize(
    "value",
    [math.inf, -math.inf, math.nan, 3.5e38, -3.5e38, 10**39, 10**5000, -(10**400)],
    ids=["inf", "-inf", "nan", "3.5e38", "-3.5e38", "1e39-int", "5000-digits", "-400-digits"],
)
def test_numbers_a_float32_cannot_hold_are_refused(model: Model, value: Any) -> None:
    for payload, field in (
        ({"instances": [row(income=value)]}, "instances[0].income"),
        ({"inputs": {k: [v] for k, v in row(income=value).items()}}, "inputs.income[0]"),
    ):
        error = refused(model, payload)
        assert (error.status, error.field) == (422, field)
        assert len(error.message) < 200  # a 5000-digit integer is not echoed


def test_the_float32_edges_are_scored(model: Model) -> None:
    edge = float(np.finfo(np.float32).max)
    answer = model.predict_payload({"instances": [row(income=edge), row(income=-edge)]})
    assert all(math.isfinite(p) for shares in answer["probabilities"] for p in shares)


def test_lone_surrogate_is_refused(model: Model) -> None:
    error = refused(model, {"instances": [row(employment="sal\ud800aried")]})
    assert (error.status, error.field) == (422, "instances[0].employment")
    assert "surrogate" in error.message


def test_unseen_category_is_refused_with_the_known_ones(model: Model) -> None:
    error = refused(model, {"instances": [row(employment="astronaut")]})
    assert (error.status, error.field) == (422, "instances[0].employment")
    assert "'astronaut'" in error.message
    assert "'salaried'" in error.message and "'unemployed'" in error.message


def test_unseen_category_is_scored_when_the_list_may_be_incomplete(
    trained_artifact: Path,
) -> None:
    import json

    card = json.loads((trained_artifact / "model_card.json").read_text())
    for feature in card["input_schema"]["features"]:
        if feature["name"] == "employment":
            feature["categories"] = [f"level-{i}" for i in range(200)]  # capped: may be cut
    model = Model(trained_artifact / "model.onnx", _columns(card), card)
    answer = model.predict_payload({"instances": [row(employment="astronaut")]})
    assert len(answer["predictions"]) == 1


def _columns(card: dict[str, Any]) -> list:
    from deploy.inference import columns_from_schema

    return columns_from_schema(card["input_schema"])


def test_long_strings_are_refused_and_not_echoed(model: Model) -> None:
    error = refused(model, {"instances": [row(employment="x" * 10_000_000)]})
    assert (error.status, error.field) == (422, "instances[0].employment")
    assert len(error.message) < 200


def test_huge_values_are_never_echoed_whole(model: Model) -> None:
    huge = ["x" * 1000] * 1000
    for value in (huge, {"k" * 5000: 1}, "é" * 5000):
        error = refused(model, {"instances": [row(age=value)]})
        echoed = error.message.split("got ", 1)[1]
        assert len(echoed) <= MAX_ECHO_CHARS
    error = refused(model, {"instances": [row(**{"k" * 10_000: 1})]})
    assert len(error.field) < 100 and len(error.message) < 300


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"instances": []}, "instances"),
        ({"instances": None}, "instances"),
        ({"instances": {"age": 1}}, "instances"),
        ({"instances": "rows"}, "instances"),
        ({"instances": [[41, 38000.5]]}, "instances[0]"),
        ({"inputs": []}, "inputs"),
        ({"inputs": {k: v for k, v in row().items() if k != "age"}}, "inputs.age"),
        ({"inputs": {**{k: [v] for k, v in row().items()}, "age": 41}}, "inputs.age"),
        (
            {"inputs": {**{k: [v] for k, v in row().items()}, "employment": ["a", "b"]}},
            "inputs.employment",
        ),
        ({"inputs": {k: [] for k in row()}}, "inputs.age"),
        ({"rows": [row()]}, "rows"),
        ({"instances": [row()], "inputs": {}}, "inputs"),
        ({"instances": [row()], "extra": 1}, "extra"),
        ({}, None),
        ([row()], None),
        ("instances", None),
        (None, None),
    ],
)
def test_malformed_payloads_name_the_field(model: Model, payload: Any, field: str | None) -> None:
    error = refused(model, payload)
    assert (error.status, error.field) == (422, field)


def test_batch_size_is_bounded(model: Model) -> None:
    assert len(model.predict_payload({"instances": [row()] * 5}, max_rows=5)["predictions"]) == 5
    error = refused(model, {"instances": [row()] * 6}, max_rows=5)
    assert (error.status, error.field) == (413, "instances")
    error = refused(model, {"inputs": {k: [v] * 6 for k, v in row().items()}}, max_rows=5)
    assert (error.status, error.field) == (413, "inputs.age")


def test_request_error_is_a_value_error() -> None:
    assert issubclass(RequestError, ValueError)
    assert RequestError("x").status == 422


# --- the ONNX layout: parity with scikit-learn, and artifacts of the old layout ---------------


@pytest.mark.parametrize("example", ["credit.toml", "breast_cancer.toml", "credit_weak.toml"])
def test_served_answers_match_scikit_learn(example: str, tmp_path: Path) -> None:
    """Gradient boosting (credit) and logistic regression (breast cancer, 30 numeric
    features; credit_weak, no categorical) scored through JSON requests in the packed layout
    give scikit-learn's probabilities."""
    import json

    from deploy.inference import columns_from_schema
    from ml import artifact, train
    from ml.spec import load_spec
    from tests.conftest import EXAMPLES

    spec = load_spec(EXAMPLES / example)
    frame = data.validate(data.load_frame(spec.dataset.source), spec)
    train_rows, test_rows = data.split(frame, spec)
    pipeline = train.build_pipeline(spec).fit(
        train_rows[spec.feature_names], train_rows[spec.target]
    )
    (tmp_path / "model.onnx").write_bytes(artifact.to_onnx(pipeline, spec))
    columns = columns_from_schema(data.input_schema(train_rows, spec))
    served = Model(tmp_path / "model.onnx", columns, {"onnx_inputs": artifact.onnx_inputs(spec)})
    graph_inputs = {i.name: i.shape for i in served.session.get_inputs()}
    assert graph_inputs.pop("numeric") == [None, len(spec.numeric)]
    assert set(graph_inputs) == set(spec.categorical)

    probe = test_rows.head(200)
    records = probe[spec.feature_names].replace({np.nan: None}).to_dict("records")
    body = json.loads(json.dumps({"instances": records}))  # what a client sends
    answer = served.predict_payload(body)
    expected = pipeline.predict_proba(probe[spec.feature_names])
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=0, atol=1e-5)
    assert answer["predictions"] == pipeline.classes_[expected.argmax(axis=1)].tolist()
    assert len(np.unique(np.round(expected[:, 1], 3))) > 10, "a constant model matches trivially"


def test_an_artifact_of_the_old_layout_still_loads_and_scores(
    trained_artifact: Path, tmp_path: Path
) -> None:
    """Artifacts installed before the packed layout (one [N, 1] input per feature, a card
    without onnx_inputs, classes or task) load, verify and answer as a packed one does."""
    import json

    from skl2onnx import to_onnx as convert
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    from ml import artifact, train

    spec = parse_spec(spec_dict())
    frame = data.validate(data.load_frame(spec.dataset.source), spec)
    train_rows, _ = data.split(frame, spec)
    pipeline = train.build_pipeline(spec).fit(
        train_rows[spec.feature_names], train_rows[spec.target]
    )
    types = [
        (f.name, FloatTensorType([None, 1]) if f.type == "numeric" else StringTensorType([None, 1]))
        for f in spec.features
    ]
    old = convert(pipeline, initial_types=types, options={id(pipeline): {"zipmap": False}})
    new_dir, old_dir = tmp_path / "new", tmp_path / "old"
    for directory, onnx_bytes in ((new_dir, artifact.to_onnx(pipeline, spec)), (old_dir, None)):
        shutil.copytree(trained_artifact, directory)
        (directory / "model.onnx").write_bytes(onnx_bytes or old.SerializeToString())
    card = json.loads((old_dir / "model_card.json").read_text())
    for key in ("onnx_inputs", "classes", "task"):
        card.pop(key)
    artifact.write_json(old_dir / "model_card.json", card)
    artifact.seal(old_dir)
    artifact.seal(new_dir)

    before, after = Model.load(old_dir), Model.load(new_dir)
    assert len(before.session.get_inputs()) == len(spec.feature_names)
    assert len(after.session.get_inputs()) == 2
    rows = [row(), row(income=None, employment=None), row(late_payments=6, age=70)]
    assert before.predict_payload({"instances": rows}) == after.predict_payload({"instances": rows})
    columns = {c: frame[c].head(50) for c in spec.feature_names}
    np.testing.assert_array_equal(
        before.predict_proba(before.feeds_from_columns(columns)),
        after.predict_proba(after.feeds_from_columns(columns)),
    )


def test_a_graph_that_does_not_match_its_recorded_layout_is_refused(
    trained_artifact: Path,
) -> None:
    import json

    from deploy.inference import IntegrityError, columns_from_schema, per_column_inputs

    card = json.loads((trained_artifact / "model_card.json").read_text())
    columns = columns_from_schema(card["input_schema"])
    card["onnx_inputs"] = per_column_inputs(columns)
    with pytest.raises(IntegrityError, match="not the layout"):
        Model(trained_artifact / "model.onnx", columns, card)


@pytest.mark.parametrize("opset", [11, 21])  # Split's sizes: an attribute, then an input
def test_packing_feeds_any_other_use_of_a_numeric_column_through_one_split(opset: int) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from ml.artifact import pack_numeric

    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in "ab"]
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph([helper.make_node("Sub", ["a", "b"], ["out"])], "g", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    pack_numeric(model, ["a", "b"], "numeric")
    assert [i.name for i in model.graph.input] == ["numeric"]
    assert model.graph.node[0].op_type == "Split"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"numeric": np.array([[5, 3], [1, 4]], dtype=np.float32)})[0]
    np.testing.assert_array_equal(got, [[2], [-3]])
    onnx.checker.check_model(model)
