"""The rule for a categorical value outside the training categories (the spec's
`unseen_categories`, recorded in the card's input schema): "error" refuses it naming the field,
"missing" scores it as a missing value and lists it in the answer's "unseen"; a card from
before the rule refuses. Both request shapes. The model is trained on data where the category
is often missing, so a value scored as missing differs from one the encoder ignores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contract.serving import MAX_ECHO_CHARS, MAX_UNSEEN_NOTES, UNSEEN_KEY
from deploy.inference import IntegrityError, Model, RequestError, columns_from_schema
from ml import train
from ml.spec import parse_spec
from tests.islands import ROW, islands_frame, islands_spec


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("islands") / "artifact"
    spec = parse_spec(islands_spec(unseen_categories="missing"))
    train.fit(spec, islands_frame(), out, run_id="islands-1")
    return out


def model_with_rule(artifact: Path, rule: str | None) -> Model:
    """The trained model with its card's rule set to `rule` (None: no key at all, as in a
    card written before the rule existed)."""
    card = json.loads((artifact / "model_card.json").read_text())
    card["input_schema"].pop(UNSEEN_KEY, None)
    if rule is not None:
        card["input_schema"][UNSEEN_KEY] = rule
    return Model(artifact / "model.onnx", columns_from_schema(card["input_schema"]), card)


@pytest.fixture(scope="module")
def mapping(artifact: Path) -> Model:
    return Model.load(artifact)  # the rule as training recorded it


@pytest.fixture(scope="module")
def refusing(artifact: Path) -> Model:
    return model_with_rule(artifact, "error")


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [r[name] for r in rows] for name in rows[0]}


def test_the_trained_card_records_the_rule(trained_artifact: Path, artifact: Path) -> None:
    card = json.loads((trained_artifact / "model_card.json").read_text())
    assert card["input_schema"][UNSEEN_KEY] == "error"  # the spec's default
    card = json.loads((artifact / "model_card.json").read_text())
    assert card["input_schema"][UNSEEN_KEY] == "missing"


@pytest.mark.parametrize("rule", ["error", None], ids=["error", "card-without-the-key"])
@pytest.mark.parametrize("shape", ["instances", "inputs"])
def test_error_refuses_naming_the_field(artifact: Path, rule, shape) -> None:
    model = model_with_rule(artifact, rule)
    rows = [ROW, {**ROW, "island": "astronaut"}]
    payload = {"instances": rows} if shape == "instances" else {"inputs": columns(rows)}
    with pytest.raises(RequestError) as caught:
        model.predict_payload(payload)
    field = "instances[1].island" if shape == "instances" else "inputs.island[1]"
    assert (caught.value.status, caught.value.field) == (422, field)
    assert "unknown category 'astronaut'" in caught.value.message


def ignoring(artifact: Path) -> Model:
    """The model with its card's list of islands marked incomplete: an unseen value then
    reaches the encoder, which ignores it (an all-zero one-hot), and nothing is noted."""
    card = json.loads((artifact / "model_card.json").read_text())
    for feature in card["input_schema"]["features"]:
        if feature["name"] == "island":
            feature["categories_complete"] = False
    return Model(artifact / "model.onnx", columns_from_schema(card["input_schema"]), card)


def test_missing_scores_an_unseen_value_as_null_and_says_so(mapping: Model, artifact: Path) -> None:
    rows = [ROW, {**ROW, "island": "astronaut"}]
    nulled = [ROW, {**ROW, "island": None}]
    answer = mapping.predict_payload({"instances": rows}, request_id="r-1")
    expected = mapping.predict_payload({"instances": nulled}, request_id="r-1")
    note = answer.pop(UNSEEN_KEY)
    assert answer == expected
    # and not as the encoder would score it unmapped: the missing level carries weight here
    ignored = ignoring(artifact).predict_payload({"instances": rows}, request_id="r-1")
    assert UNSEEN_KEY not in ignored
    assert ignored["probabilities"][1] != pytest.approx(answer["probabilities"][1], abs=0.05)
    assert note == {
        "count": 1,
        "values": [{"row": 1, "field": "island", "value": "astronaut"}],
    }


def test_both_shapes_give_the_same_answer_and_note(mapping: Model) -> None:
    rows = [
        {**ROW, "island": "astronaut"},
        ROW,
        {**ROW, "island": "pirate"},
        {**ROW, "island": None},
    ]
    by_records = mapping.predict_payload({"instances": rows})
    by_columns = mapping.predict_payload({"inputs": columns(rows)})
    assert by_columns == by_records
    assert [(v["row"], v["value"]) for v in by_records[UNSEEN_KEY]["values"]] == [
        (0, "astronaut"),
        (2, "pirate"),
    ]


def test_an_answer_with_every_value_known_is_unchanged(mapping: Model, refusing: Model) -> None:
    rows = [ROW, {**ROW, "island": None}]
    for payload in ({"instances": rows}, {"inputs": columns(rows)}):
        answer = mapping.predict_payload(payload, request_id="same")
        assert UNSEEN_KEY not in answer
        assert json.dumps(answer) == json.dumps(
            refusing.predict_payload(payload, request_id="same")
        )


def test_the_note_is_bounded(mapping: Model) -> None:
    long_value = "x" * 1000
    rows = [{**ROW, "island": f"{long_value}{i}"} for i in range(40)]
    note = mapping.predict_payload({"instances": rows})[UNSEEN_KEY]
    assert note["count"] == 40
    assert len(note["values"]) == MAX_UNSEEN_NOTES
    assert [v["row"] for v in note["values"]] == list(range(MAX_UNSEEN_NOTES))
    assert all(len(v["value"]) <= MAX_ECHO_CHARS for v in note["values"])
    assert len(json.dumps(note)) < 1000


@pytest.mark.parametrize(
    ("value", "says"),
    [(42, "expected a string"), ("sal\ud800aried", "surrogate"), ("x" * 5000, "characters")],
)
def test_missing_still_refuses_what_is_not_a_category(mapping: Model, value, says) -> None:
    for payload, field in (
        ({"instances": [{**ROW, "island": value}]}, "instances[0].island"),
        ({"inputs": columns([{**ROW, "island": value}])}, "inputs.island[0]"),
    ):
        with pytest.raises(RequestError) as caught:
            mapping.predict_payload(payload)
        assert (caught.value.status, caught.value.field) == (422, field)
        assert says in caught.value.message


def test_missing_applies_to_the_latency_gates_predict_too(mapping: Model) -> None:
    unseen, nulled = mapping.predict([{**ROW, "island": "astronaut"}, {**ROW, "island": None}])
    assert unseen == nulled


def test_an_unknown_rule_in_the_card_is_refused_naming_the_key(artifact: Path) -> None:
    with pytest.raises(IntegrityError, match=r"input_schema\.unseen is 'drop'"):
        model_with_rule(artifact, "drop")


def test_tandem_predict_says_what_was_scored_as_missing(mapping: Model) -> None:
    from ml.cli import prediction_table

    rows = [ROW, {**ROW, "island": "Mars"}]
    table = prediction_table(mapping.predict_payload({"instances": rows}))
    assert table.caption is not None and "row 1 island='Mars'" in str(table.caption)
    assert prediction_table(mapping.predict_payload({"instances": [ROW]})).caption is None
