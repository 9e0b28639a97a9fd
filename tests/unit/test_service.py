"""deploy/service.py: routes, statuses, the answer's shape, request ids, the canary split,
swaps, and building a Service from the environment or the local state file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from contract import serving
from deploy.inference import Model
from deploy.service import Response, Service
from tests.conftest import CREDIT_ROW

ROW = CREDIT_ROW
GOOD = json.dumps({"instances": [ROW]}).encode()
JSON = {"content-type": "application/json"}
SURROGATE = json.dumps({"instances": [{**ROW, "employment": "sal\ud800"}]}).encode()


@pytest.fixture(scope="module")
def live(trained_artifact: Path) -> Model:
    return Model.load(trained_artifact, version=3)


@pytest.fixture(scope="module")
def canary(trained_artifact: Path) -> Model:
    return Model.load(trained_artifact, version=4)


def body(response: Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    return json.loads(response.body)


def predict(service: Service, payload: bytes = GOOD, headers: Mapping[str, str] = JSON):
    return service.handle("POST", serving.PREDICT_PATH, headers, payload)


def test_a_prediction_has_the_documented_shape(live: Model) -> None:
    response = predict(Service(live), headers={**JSON, "x-request-id": "req-42"})
    assert response.status == 200
    answer = body(response)
    assert list(answer) == [
        "model", "version", "request_id", "task", "classes", "predictions", "probabilities",
    ]  # fmt: skip
    assert answer["model"] == "credit" and answer["version"] == 3
    assert answer["request_id"] == "req-42"
    assert answer["task"] == "binary" and answer["classes"] == [0, 1]
    assert len(answer["predictions"]) == 1 and len(answer["probabilities"][0]) == 2
    assert response.headers[serving.REQUEST_ID_HEADER] == "req-42"
    assert response.headers[serving.VERSION_HEADER] == "3"


def test_the_same_request_gets_the_same_answer_as_the_core(live: Model) -> None:
    answer = body(predict(Service(live), headers={**JSON, "x-request-id": "a"}))
    assert answer == live.predict_payload({"instances": [ROW]}, request_id="a")


@pytest.mark.parametrize("given", ["", "has space", "x" * 129, "-leading-dash", "new\nline", "é"])
def test_a_malformed_request_id_is_replaced(live: Model, given: str) -> None:
    response = predict(Service(live), headers={**JSON, "X-Request-Id": given})
    rid = response.headers[serving.REQUEST_ID_HEADER]
    assert rid != given and len(rid) == 32, rid
    assert body(response)["request_id"] == rid


def test_request_ids_are_generated_and_unique(live: Model) -> None:
    service = Service(live)
    ids = {body(predict(service))["request_id"] for _ in range(20)}
    assert len(ids) == 20


def test_header_names_are_case_insensitive(live: Model) -> None:
    response = predict(Service(live), headers={"Content-Type": "text/csv", "X-REQUEST-ID": "q1"})
    assert response.status == 415
    assert body(response)["request_id"] == "q1"


def test_health(live: Model, canary: Model) -> None:
    response = Service(live).handle("GET", serving.HEALTH_PATH, {}, b"")
    assert response.status == 200
    assert body(response) | {"request_id": None} == {
        "status": "ok", "model": "credit", "version": 3, "canary": None, "request_id": None,
    }  # fmt: skip
    with_canary = Service(live, canary, 0.25).handle("GET", serving.HEALTH_PATH, {}, b"")
    assert body(with_canary)["canary"] == {"version": 4, "weight": 0.25}


def test_nothing_loaded_is_503(live: Model) -> None:
    service = Service(None)
    assert service.handle("GET", serving.HEALTH_PATH, {}, b"").status == 503
    response = predict(service)
    assert response.status == 503
    assert "no model" in body(response)["error"]
    service.swap(live)
    assert predict(service).status == 200


@pytest.mark.parametrize(
    ("method", "path", "headers", "payload", "status", "field"),
    [
        ("POST", "/nowhere", JSON, GOOD, 404, None),
        ("GET", serving.PREDICT_PATH, JSON, b"", 405, None),
        ("PUT", serving.PREDICT_PATH, JSON, GOOD, 405, None),
        ("POST", serving.HEALTH_PATH, JSON, GOOD, 405, None),
        ("POST", serving.PREDICT_PATH, {"content-type": "text/csv"}, GOOD, 415, "content-type"),
        (
            "POST",
            serving.PREDICT_PATH,
            {"content-type": "application/json; charset=latin-1"},
            GOOD,
            415,
            "content-type",
        ),
        ("POST", serving.PREDICT_PATH, JSON, b"{", 400, None),
        ("POST", serving.PREDICT_PATH, JSON, b"", 400, None),
        ("POST", serving.PREDICT_PATH, JSON, b'{"instances": [{"age": NaN}]}', 400, None),
        ("POST", serving.PREDICT_PATH, JSON, b'{"instances": [{"age": -Infinity}]}', 400, None),
        ("POST", serving.PREDICT_PATH, JSON, b'{"instances": "\xff"}', 400, None),
        ("POST", serving.PREDICT_PATH, JSON, b"[" * 100_000 + b"]" * 100_000, 400, None),
        ("POST", serving.PREDICT_PATH, JSON, b'{"instances": [' + b"9" * 5000 + b"]}", 400, None),
        (
            "POST",
            serving.PREDICT_PATH,
            {**JSON, serving.ROUTE_HEADER: "blue"},
            GOOD,
            400,
            serving.ROUTE_HEADER,
        ),
        ("POST", serving.PREDICT_PATH, {**JSON, serving.ROUTE_HEADER: "canary"}, GOOD, 503, None),
        (
            "POST",
            serving.PREDICT_PATH,
            JSON,
            b'{"instances": [{"age": 1e999}]}',
            422,
            "instances[0].age",
        ),
        ("POST", serving.PREDICT_PATH, JSON, SURROGATE, 422, "instances[0].employment"),
    ],
)
def test_errors(live, method, path, headers, payload, status, field) -> None:
    response = Service(live).handle(method, path, headers, payload)
    assert response.status == status, response.body
    answer = body(response)
    assert set(answer) == {"error", "field", "request_id"}
    assert answer["field"] == field
    assert answer["error"] and len(answer["error"]) < 300
    assert response.headers[serving.REQUEST_ID_HEADER] == answer["request_id"]
    if status == 405:
        assert response.headers["allow"]


def test_a_missing_content_type_is_read_as_json(live: Model) -> None:
    assert predict(Service(live), headers={}).status == 200
    assert predict(Service(live), headers={"content-type": "application/vnd.x+json"}).status == 200


def test_a_query_string_does_not_change_the_route(live: Model) -> None:
    assert Service(live).handle("POST", "/predict?x=1", JSON, GOOD).status == 200


def test_limits(live: Model) -> None:
    service = Service(live, max_rows=2, max_body_bytes=len(GOOD) * 3)
    three = json.dumps({"instances": [ROW] * 3}).encode()
    assert len(three) < len(GOOD) * 3
    response = predict(service, three)
    assert (response.status, body(response)["field"]) == (413, "instances")
    response = predict(service, b" " * (len(GOOD) * 3) + GOOD)
    assert response.status == 413
    assert predict(service).status == 200


def test_other_paths_serve_the_same(live: Model) -> None:
    service = Service(
        live,
        health_paths=frozenset({serving.SAGEMAKER_PING_PATH}),
        predict_paths=frozenset({serving.SAGEMAKER_INVOCATIONS_PATH}),
    )
    assert service.handle("GET", serving.SAGEMAKER_PING_PATH, {}, b"").status == 200
    assert service.handle("POST", serving.SAGEMAKER_INVOCATIONS_PATH, JSON, GOOD).status == 200
    assert service.handle("POST", serving.PREDICT_PATH, JSON, GOOD).status == 404


# --- canary -----------------------------------------------------------------------------------


def version_for(service: Service, request_id: str, route: str | None = None) -> int:
    headers = {**JSON, serving.REQUEST_ID_HEADER: request_id}
    if route:
        headers[serving.ROUTE_HEADER] = route
    response = predict(service, headers=headers)
    assert response.headers[serving.VERSION_HEADER] == str(body(response)["version"])
    return body(response)["version"]


def test_the_canary_takes_its_share_deterministically(live: Model, canary: Model) -> None:
    service = Service(live, canary, 0.2)
    ids = [f"r{i}" for i in range(1000)]
    first = [version_for(service, i) for i in ids]
    assert first == [version_for(service, i) for i in ids]  # the same id, the same version
    share = first.count(4) / len(first)
    assert 0.15 < share < 0.25, share


def test_the_route_header_pins_a_version(live: Model, canary: Model) -> None:
    service = Service(live, canary, 0.5)
    assert {version_for(service, f"p{i}", "canary") for i in range(50)} == {4}
    assert {version_for(service, f"p{i}", "live") for i in range(50)} == {3}


def test_weights_zero_and_one(live: Model, canary: Model) -> None:
    assert {version_for(Service(live, canary, 0.0), f"w{i}") for i in range(50)} == {3}
    assert {version_for(Service(live, canary, 1.0), f"w{i}") for i in range(50)} == {4}


def test_swap_replaces_what_answers(live: Model, canary: Model) -> None:
    service = Service(live)
    assert version_for(service, "s") == 3
    service.swap(canary)
    assert version_for(service, "s") == 4
    service.swap(live, canary, 1.0)
    assert version_for(service, "s") == 4 and version_for(service, "s", "live") == 3
    with pytest.raises(ValueError, match="between 0 and 1"):
        service.swap(live, canary, 1.5)
    assert version_for(service, "s", "live") == 3  # a refused swap changes nothing


# --- capture ----------------------------------------------------------------------------------


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.offers: list[tuple] = []
        self.fail = fail

    def offer(self, model, version, request_id, payload, answer) -> None:
        self.offers.append((model, version, request_id, payload, answer))
        if self.fail:
            raise RuntimeError("capture is down")


def test_capture_sees_each_answered_request(live: Model) -> None:
    recorder = Recorder()
    service = Service(live, capture=recorder)
    payload = {"instances": [{**ROW, "customer_id": "C-9"}]}
    response = predict(service, json.dumps(payload).encode(), {**JSON, "x-request-id": "c1"})
    assert response.status == 200
    predict(service, b"{}")  # refused: not captured
    assert recorder.offers == [("credit", 3, "c1", payload, body(response))]


def test_a_failing_capture_never_fails_a_request(live: Model) -> None:
    assert predict(Service(live, capture=Recorder(fail=True))).status == 200


# --- building a Service -----------------------------------------------------------------------


def test_from_env(trained_artifact: Path, tmp_path: Path) -> None:
    environ = {
        serving.ENV_MODEL_URI: str(trained_artifact),
        serving.ENV_MODEL_NAME: "credit",
        serving.ENV_MODEL_VERSION: "5",
        serving.ENV_CANARY_URI: str(trained_artifact / "model.tar.gz"),
        serving.ENV_CANARY_VERSION: "6",
        serving.ENV_CANARY_WEIGHT: "0.5",
        serving.ENV_MAX_ROWS: "2",
        serving.ENV_MAX_BODY_BYTES: "100000",
    }
    service = Service.from_env(environ)
    assert (service.max_rows, service.max_body_bytes) == (2, 100000)
    assert version_for(service, "e", "live") == 5
    assert version_for(service, "e", "canary") == 6
    assert predict(service, json.dumps({"instances": [ROW] * 3}).encode()).status == 413
    empty = Service.from_env({})
    assert predict(empty).status == 503
    with pytest.raises(ValueError, match=serving.ENV_MAX_ROWS):
        Service.from_env({**environ, serving.ENV_MAX_ROWS: "many"})


def test_from_state(trained_artifact: Path, tmp_path: Path) -> None:
    second = tmp_path / "v2"
    shutil.copytree(trained_artifact, second)
    state = tmp_path / serving.STATE_FILE
    state.write_text(
        json.dumps(
            {
                "model": "credit",
                "live": {"version": 1, "path": str(trained_artifact)},
                "canary": {"version": 2, "path": str(second), "weight": 0.1},
            }
        )
    )
    service = Service.from_state(state)
    assert version_for(service, "x", "live") == 1
    assert version_for(service, "x", "canary") == 2
    assert service.routing.canary_weight == 0.1
