"""deploy/aws_lambda/handler.py: Function URL and HTTP API events through the real Service, the
EMF log line, a failing load (503, retried no sooner than 30 s) and capture."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from contract import metrics, serving
from deploy.aws_lambda import emf
from deploy.aws_lambda.handler import RETRY_SECONDS, App, request_of
from deploy.service import Service
from tests.conftest import CREDIT_ROW

ROW = CREDIT_ROW
GOOD = json.dumps({"instances": [ROW, {**ROW, "age": 63}]})


class Context:
    aws_request_id = "8f5d6c1e-7a2b-4c3d-9e0f-123456789abc"


def event(
    method: str = "POST",
    path: str = serving.PREDICT_PATH,
    body: str | None = GOOD,
    *,
    headers: dict[str, Any] | None = None,
    stage: str = "$default",
    b64: bool = False,
) -> dict[str, Any]:
    """A payload format 2.0 event as a Function URL (stage $default) or an HTTP API sends it."""
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    if b64 and body is not None:
        body = base64.b64encode(body.encode()).decode()
    out: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"} if headers is None else headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.eu-west-1.on.aws",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "test",
            },
            "requestId": "c0ffee00-0000-4000-8000-000000000001",
            "stage": stage,
            "timeEpoch": 1_767_225_600_000,
        },
        "isBase64Encoded": b64,
    }
    if body is not None:
        out["body"] = body
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def env(trained_artifact: Path) -> dict[str, str]:
    return {
        serving.ENV_MODEL_URI: str(trained_artifact),
        serving.ENV_MODEL_NAME: "credit",
        serving.ENV_MODEL_VERSION: "7",
    }


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def app(env: dict[str, str], lines: list[str]) -> App:
    return App(env, write=lines.append)


def answer(response: dict[str, Any]) -> dict[str, Any]:
    assert response["headers"]["content-type"] == "application/json", response
    assert response["isBase64Encoded"] is False
    return json.loads(response["body"])


def test_function_url_predict(app: App) -> None:
    response = app(event(), Context())
    assert response["statusCode"] == 200, response
    body = answer(response)
    assert body["model"] == "credit" and body["version"] == 7
    assert len(body["predictions"]) == 2 and len(body["probabilities"]) == 2
    # without a request id of its own, the request carries Lambda's: logs correlate on it
    assert body["request_id"] == Context.aws_request_id
    assert response["headers"][serving.REQUEST_ID_HEADER] == Context.aws_request_id
    assert response["headers"][serving.VERSION_HEADER] == "7"


def test_the_same_request_gets_the_same_answer_as_the_service(app: App, env) -> None:
    headers = {"content-type": "application/json", "x-request-id": "same-1"}
    through_lambda = answer(app(event(headers=headers), Context()))
    direct = Service.from_env(env).handle("POST", serving.PREDICT_PATH, headers, GOOD.encode())
    assert direct.status == 200
    assert through_lambda == json.loads(direct.body)


def test_http_api_stage_prefix_and_base64_body(app: App) -> None:
    plain = answer(app(event(headers={"x-request-id": "r1"}), Context()))
    staged = app(event(stage="prod", b64=True, headers={"x-request-id": "r1"}), Context())
    assert staged["statusCode"] == 200, staged
    assert answer(staged) == plain
    # a path that only starts with the stage's name keeps it
    unstaged = {**event(stage="prod"), "rawPath": "/production/predict"}
    assert request_of(unstaged)[1] == "/production/predict"
    assert request_of(event(path="", stage="prod"))[1] == "/"


def test_health(app: App) -> None:
    response = app(event("GET", serving.HEALTH_PATH, None), Context())
    assert response["statusCode"] == 200
    assert answer(response)["status"] == "ok" and answer(response)["version"] == 7


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("POST", "/nowhere", None, GOOD, 404),
        ("GET", serving.PREDICT_PATH, None, None, 405),
        ("DELETE", serving.HEALTH_PATH, None, None, 405),
        ("POST", serving.PREDICT_PATH, {"content-type": "text/csv"}, GOOD, 415),
        ("POST", serving.PREDICT_PATH, None, "x" * (serving.MAX_BODY_BYTES + 1), 413),
        ("POST", serving.PREDICT_PATH, None, "{not json", 400),
        ("POST", serving.PREDICT_PATH, None, '{"instances": [{"age": "old"}]}', 422),
    ],
)
def test_refusals(app: App, lines, method, path, headers, body, status) -> None:
    response = app(event(method, path, body, headers=headers), Context())
    assert response["statusCode"] == status, response
    assert answer(response)["error"]
    record = json.loads(lines[-1])
    assert record["status"] == status and record[metrics.ERRORS_4XX] == 1
    assert record[metrics.PREDICTIONS] == 0


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "GET /health",
        {},
        {"requestContext": {}},
        {"requestContext": {"http": {"method": 7}}, "rawPath": "/health"},
        {"requestContext": {"http": {"method": "GET"}}},  # no path at all
        {**event(), "headers": ["content-type", "application/json"]},
        {**event(), "body": {"instances": []}},
        {**event(), "isBase64Encoded": "yes"},
        {**event(), "isBase64Encoded": True, "body": "not base64!"},
        {**event(), "rawPath": 3},
    ],
)
def test_a_malformed_event_is_a_400_not_an_exception(app: App, lines, bad) -> None:
    response = app(bad, None)
    assert response["statusCode"] == 400, response
    body = answer(response)
    assert body["error"] and body["request_id"]
    assert json.loads(lines[-1])["status"] == 400


def test_each_request_logs_one_emf_record(app: App, lines: list[str]) -> None:
    app(event(), Context())
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["request_id"] == Context.aws_request_id
    assert record["model"] == "credit" and record["version"] == 7
    assert record["route"] == serving.PREDICT_PATH and record["status"] == 200
    assert record["latency_ms"] > 0
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == metrics.NAMESPACE
    dimension_sets = [[metrics.DIM_MODEL], [metrics.DIM_MODEL, metrics.DIM_VERSION]]
    assert directive["Dimensions"] == dimension_sets
    declared = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert declared == metrics.ENDPOINT_METRICS
    # every metric and dimension the directive names is a member of the record
    for name in declared:
        assert isinstance(record[name], int | float), name
    assert record[metrics.DIM_MODEL] == "credit" and record[metrics.DIM_VERSION] == "7"
    assert record[metrics.PREDICTIONS] == 2
    assert record[metrics.ERRORS_4XX] == 0 and record[metrics.ERRORS_5XX] == 0
    assert isinstance(record["_aws"]["Timestamp"], int)


def test_an_unknown_route_is_logged_without_echoing_the_path(app: App, lines) -> None:
    app(event(path="/" + "a" * 5000), Context())
    record = json.loads(lines[-1])
    assert record["route"] == "other" and len(lines[-1]) < 2000


def test_emf_refuses_an_undeclared_metric() -> None:
    with pytest.raises(ValueError, match="not an endpoint metric"):
        emf.record(model="m", version=1, values={"made_up": 1}, timestamp_ms=0)
    record = emf.record(model=None, version=None, values={}, timestamp_ms=0)
    assert record[metrics.DIM_MODEL] == metrics.UNKNOWN_MODEL and record[metrics.DIM_VERSION]


def test_no_model_configured_is_503(lines: list[str]) -> None:
    app = App({}, write=lines.append)
    response = app(event(), Context())
    assert response["statusCode"] == 503
    record = json.loads(lines[-1])
    assert record[metrics.ERRORS_5XX] == 1 and record[metrics.DIM_MODEL] == metrics.UNKNOWN_MODEL


def test_a_failed_load_is_503_naming_the_problem_and_retried_after_30s(
    env: dict[str, str], tmp_path: Path, artifact_copy: Path, lines: list[str]
) -> None:
    clock = Clock()
    (artifact_copy / "model.onnx").write_bytes(b"tampered")
    loads: list[float] = []

    def load(environ) -> Service:
        loads.append(clock())
        return Service.from_env(environ)

    app = App({**env, serving.ENV_MODEL_URI: str(artifact_copy)}, clock=clock,
              write=lines.append, load=load)  # fmt: skip
    response = app(event(), Context())
    assert response["statusCode"] == 503
    assert "model.onnx" in answer(response)["error"], answer(response)
    assert json.loads(lines[-1])[metrics.ERRORS_5XX] == 1
    health = app(event("GET", serving.HEALTH_PATH, None), Context())
    assert health["statusCode"] == 503

    clock.now += RETRY_SECONDS - 1  # not yet: no load on every request
    assert app(event(), Context())["statusCode"] == 503
    assert len(loads) == 1

    shutil.copy(env[serving.ENV_MODEL_URI] + "/model.onnx", artifact_copy / "model.onnx")
    clock.now += 1
    response = app(event(), Context())
    assert response["statusCode"] == 200, response
    assert len(loads) == 2
    assert app(event(), Context())["statusCode"] == 200 and len(loads) == 2


def test_a_load_that_raises_anything_is_contained(lines: list[str]) -> None:
    def boom(environ) -> Service:
        raise RuntimeError("x" * 10_000)

    app = App({}, load=boom, write=lines.append)
    response = app(event(), Context())
    assert response["statusCode"] == 503 and len(response["body"]) < 1000


def test_capture_drops_personal_columns_and_is_flushed(
    env: dict[str, str], tmp_path: Path, lines: list[str]
) -> None:
    store = tmp_path / "store"
    clock = Clock()
    app = App({**env, serving.ENV_CAPTURE_URI: str(store), serving.ENV_CAPTURE_SAMPLE: "1"},
              clock=clock, write=lines.append)  # fmt: skip
    body = json.dumps({"instances": [{**ROW, "customer_id": "C-123"}]})
    assert app(event(body=body), Context())["statusCode"] == 200
    clock.now += 11  # the next request finds the capture waiting and flushes it
    assert app(event(), Context())["statusCode"] == 200
    written = [json.loads(x) for f in store.rglob("*.jsonl") for x in f.read_text().splitlines()]
    assert written, list(store.rglob("*"))
    assert written[0]["inputs"]["age"] == 41
    assert "customer_id" not in written[0]["inputs"], written[0]
    app.tap.capture.close()


def test_a_failing_capture_never_fails_a_request(env, tmp_path: Path, lines) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    clock = Clock()
    app = App({**env, serving.ENV_CAPTURE_URI: str(blocker / "store")}, clock=clock,
              write=lines.append)  # fmt: skip
    assert app(event(), Context())["statusCode"] == 200
    clock.now += 60
    assert app(event(), Context())["statusCode"] == 200  # flushes into a sink that fails
    assert app.tap.capture.counters()["failed"] >= 1
    app.tap.capture.close()


def test_a_bad_capture_setting_leaves_the_endpoint_serving(env, lines) -> None:
    app = App({**env, serving.ENV_CAPTURE_URI: "ftp://nowhere"}, write=lines.append)
    assert app(event(), Context())["statusCode"] == 200
    assert any("capture disabled" in line for line in lines)
