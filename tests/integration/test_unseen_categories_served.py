"""A model trained with `unseen_categories = "missing"`, end to end: the rule rides in the card
and in model.onnx's metadata; the local server (real loopback port) and the Lambda handler
answer a row with an unseen category exactly as the same row with that field null, plus the
"unseen" note; the capture keeps the value the client sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest

from contract import serving
from deploy.aws_lambda.handler import App
from deploy.capture import Capture, DirectorySink
from deploy.inference import Model
from deploy.server import Server
from deploy.service import Service
from ml import artifact, train
from ml.spec import parse_spec
from tests.integration.http_helpers import Client
from tests.islands import ROW, islands_frame, islands_spec

UNSEEN_ROW = {**ROW, "island": "Mars"}
NULL_ROW = {**ROW, "island": None}
NOTE = {"count": 1, "values": [{"row": 0, "field": "island", "value": "Mars"}]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("islands") / "artifact"
    spec = parse_spec(islands_spec(unseen_categories="missing"))
    train.fit(spec, islands_frame(), out, run_id="islands-e2e")
    return out


def without_note(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != serving.UNSEEN_KEY}


def test_the_rule_travels_in_the_card_and_the_onnx_metadata(trained: Path) -> None:
    card = json.loads((trained / artifact.CARD).read_text())
    assert card["spec"]["unseen_categories"] == "missing"
    assert card["input_schema"][serving.UNSEEN_KEY] == "missing"
    metadata = {p.key: p.value for p in onnx.load(trained / artifact.ONNX).metadata_props}
    schema = json.loads(metadata[artifact.METADATA_PREFIX + "input_schema"])
    assert schema[serving.UNSEEN_KEY] == "missing"


def test_the_local_server_scores_an_unseen_category_as_null_and_says_so(
    trained: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    capture = Capture(DirectorySink(store), sample=1.0, personal_columns=(), key=None)
    service = Service(Model.load(trained, version=1), capture=capture)
    with Server(service).start() as server, Client(server.url) as client:
        seen = {}
        for name, payload in (
            ("unseen records", {"instances": [UNSEEN_ROW]}),
            ("unseen columns", {"inputs": {k: [v] for k, v in UNSEEN_ROW.items()}}),
            ("null", {"instances": [NULL_ROW]}),
        ):
            response = client.post(serving.PREDICT_PATH, payload, {"x-request-id": "same"})
            assert response.status == 200, response.body
            seen[name] = response.json()
    assert seen["unseen records"] == seen["unseen columns"]
    assert seen["unseen records"][serving.UNSEEN_KEY] == NOTE
    assert without_note(seen["unseen records"]) == seen["null"]
    assert serving.UNSEEN_KEY not in seen["null"]
    # the capture keeps what the client sent: drift sees the new category for what it is
    assert capture.flush(timeout=10)
    capture.close()
    lines = [json.loads(x) for f in store.rglob("*.jsonl") for x in f.read_text().splitlines()]
    assert sorted(line["inputs"]["island"] or "" for line in lines) == ["", "Mars", "Mars"]


def test_the_lambda_handler_passes_the_note_through(trained: Path) -> None:
    app = App(
        {serving.ENV_MODEL_URI: str(trained), serving.ENV_MODEL_VERSION: "1"},
        write=lambda line: None,
    )

    def score(row: dict[str, Any]) -> dict[str, Any]:
        event = {
            "version": "2.0",
            "rawPath": serving.PREDICT_PATH,
            "headers": {"content-type": "application/json", "x-request-id": "same"},
            "requestContext": {"http": {"method": "POST", "path": serving.PREDICT_PATH}},
            "body": json.dumps({"instances": [row]}),
            "isBase64Encoded": False,
        }
        response = app(event, None)
        assert response["statusCode"] == 200, response
        return json.loads(response["body"])

    unseen = score(UNSEEN_ROW)
    assert unseen[serving.UNSEEN_KEY] == NOTE
    assert without_note(unseen) == score(NULL_ROW)
