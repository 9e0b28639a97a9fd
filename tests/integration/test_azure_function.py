"""deploy/azure_functions/function_app.py behind a loopback stand-in for the Functions host
(tests/azure_function_host.py): routes, answers, limits and errors as the Service gives them,
the function key, one log line per request, the canary split from app settings, a restart on a
settings change, a model fetched from a blob on Azurite, and capture into an Azurite container."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.storage.blob import ContainerClient

from contract import layout, metrics, serving
from contract.emulators import AZURITE_ACCOUNT, AZURITE_KEY
from deploy import azure_blob
from deploy.aws_lambda.handler import App
from deploy.service import Service
from tests.azure_function_host import FUNCTION_APP, FunctionHost
from tests.conftest import CREDIT_ROW
from tests.integration.http_helpers import JSON, Answer, Client, wait_until

KEY = "function-key-for-tests"
ROW = CREDIT_ROW
GOOD = json.dumps({"instances": [ROW, {**ROW, "age": 63}]}).encode()
# The fields every request's line carries on Lambda (its EMF record without the `_aws` block).
LINE_FIELDS = {
    "level", "message", "request_id", "model", "version", "route", "method", "status",
    metrics.DIM_MODEL, metrics.DIM_VERSION, *metrics.ENDPOINT_METRICS,
}  # fmt: skip


@pytest.fixture(scope="module")
def environ(trained_artifact: Path) -> dict[str, str]:
    return {
        serving.ENV_MODEL_URI: str(trained_artifact),
        serving.ENV_MODEL_NAME: "credit",
        serving.ENV_MODEL_VERSION: "3",
    }


def hosted(settings: dict[str, str]) -> FunctionHost:
    """The function app with these app settings (read on each request: change the dict to
    deploy)."""
    return FunctionHost(FUNCTION_APP, KEY, lambda: settings)


def call(
    host: FunctionHost,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    key: str | None = KEY,
) -> Answer:
    sent = {**JSON, **(headers or {})}
    if key is not None:
        sent[FunctionHost.KEY_HEADER] = key
    with Client(host.url) as client:
        return client.request(method, path, body, sent)


def lines(host: FunctionHost) -> list[dict[str, Any]]:
    """The request lines the function logged, parsed."""
    out = []
    for record in host.records:
        with_fields = record.getMessage()
        if record.name == "tandem.endpoint" and '"message":"request"' in with_fields:
            out.append(json.loads(with_fields))
    return out


def refusal(answer: Answer) -> dict[str, Any]:
    """A 4xx/5xx answer in the Service's shape: JSON naming what was wrong, no traceback."""
    assert answer.headers["content-type"] == "application/json", answer
    assert b"Traceback" not in answer.body, answer.body
    body = answer.json()
    assert set(body) == {"error", "field", "request_id"}, body
    assert body["error"], body
    return body


# --- routes, answers, limits ------------------------------------------------------------------


def test_health_and_predict_answer_as_the_service_does(environ) -> None:
    expected = Service.from_env(environ).handle(
        "POST", serving.PREDICT_PATH, {**JSON, serving.REQUEST_ID_HEADER: "az-1"}, GOOD
    )
    with hosted(dict(environ)) as host:
        health = call(host, "GET", serving.HEALTH_PATH)
        answer = call(host, "POST", serving.PREDICT_PATH, GOOD, {serving.REQUEST_ID_HEADER: "az-1"})
    assert health.status == 200, health
    assert health.json()["status"] == "ok" and health.json()["version"] == 3
    assert answer.status == 200, answer
    assert answer.json() == json.loads(expected.body)
    assert answer.headers[serving.VERSION_HEADER] == "3"
    assert answer.headers[serving.REQUEST_ID_HEADER] == "az-1"
    assert answer.headers["content-type"] == "application/json"


def test_the_routes_are_exactly_health_and_predict(environ) -> None:
    """host.json's empty routePrefix: no /api in front, and every other path is the Service's
    own 404 (in its JSON shape), not the host's empty one."""
    with hosted(dict(environ)) as host:
        prefixed = call(host, "POST", "/api" + serving.PREDICT_PATH, GOOD)
        root = call(host, "GET", "/")
    assert prefixed.status == 404 and "no route" in refusal(prefixed)["error"]
    assert root.status == 404 and refusal(root)


def test_a_request_without_the_function_key_never_reaches_the_function(environ) -> None:
    with hosted(dict(environ)) as host:
        missing = call(host, "POST", serving.PREDICT_PATH, GOOD, key=None)
        wrong = call(host, "POST", serving.PREDICT_PATH, GOOD, key="not-the-key")
        health = call(host, "GET", serving.HEALTH_PATH, key=None)
        with Client(host.url) as client:  # the key as the `code` query parameter
            by_query = client.request("GET", f"{serving.HEALTH_PATH}?code={KEY}")
        logged = lines(host)
    assert (missing.status, missing.body) == (401, b"")
    assert (wrong.status, wrong.body) == (401, b"")
    assert (health.status, health.body) == (401, b"")
    assert by_query.status == 200, by_query
    assert [line["status"] for line in logged] == [200], logged


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "named"),
    [
        ("POST", "/nowhere", {}, GOOD, 404, "/nowhere"),
        ("GET", serving.PREDICT_PATH, {}, None, 405, "POST"),
        ("DELETE", serving.HEALTH_PATH, {}, None, 405, "GET"),
        ("POST", serving.PREDICT_PATH, {"content-type": "text/csv"}, GOOD, 415, "text/csv"),
        ("POST", serving.PREDICT_PATH, {}, b"{not json", 400, "not valid JSON"),
        ("POST", serving.PREDICT_PATH, {}, b'{"instances": [{"age": "old"}]}', 422, "age"),
        ("POST", serving.PREDICT_PATH, {serving.ROUTE_HEADER: "blue"}, GOOD, 400, "blue"),
    ],
)
def test_refusals_say_what_was_wrong(environ, method, path, headers, body, status, named):
    with hosted(dict(environ)) as host:
        answer = call(host, method, path, body, headers)
        logged = lines(host)
    assert answer.status == status, answer
    assert named in refusal(answer)["error"], answer.body
    assert logged[-1]["status"] == status and logged[-1][metrics.ERRORS_4XX] == 1
    assert logged[-1][metrics.PREDICTIONS] == 0


def test_limits_come_from_the_app_settings(environ) -> None:
    settings = {**environ, serving.ENV_MAX_ROWS: "2", serving.ENV_MAX_BODY_BYTES: "2000"}
    three = json.dumps({"instances": [ROW, ROW, ROW]}).encode()
    with hosted(settings) as host:
        rows = call(host, "POST", serving.PREDICT_PATH, three)
        big = call(host, "POST", serving.PREDICT_PATH, b" " * 2001)
        fits = call(host, "POST", serving.PREDICT_PATH, GOOD)
    assert rows.status == 413 and refusal(rows)["field"] == "instances"
    assert "2" in refusal(rows)["error"]
    assert big.status == 413 and "2000" in refusal(big)["error"]
    assert fits.status == 200, fits


# --- the log line -----------------------------------------------------------------------------


def test_each_request_logs_one_line_with_the_lambdas_fields(environ) -> None:
    lambda_lines: list[str] = []
    lambda_app = App(environ, write=lambda_lines.append)
    lambda_app(
        {
            "rawPath": serving.PREDICT_PATH,
            "headers": {**JSON, serving.REQUEST_ID_HEADER: "same-id"},
            "requestContext": {"http": {"method": "POST"}, "stage": "$default"},
            "body": GOOD.decode(),
        },
        None,
    )
    on_lambda = json.loads(lambda_lines[-1])
    with hosted(dict(environ)) as host:
        call(host, "POST", serving.PREDICT_PATH, GOOD, {serving.REQUEST_ID_HEADER: "same-id"})
        call(host, "GET", serving.HEALTH_PATH)
        logged = lines(host)
        records = [r for r in host.records if r.name == "tandem.endpoint"]
    assert len(logged) == 2, logged
    line = logged[0]
    assert set(line) == LINE_FIELDS == set(on_lambda) - {"_aws"}, set(line) ^ set(on_lambda)
    for field in LINE_FIELDS - {metrics.LATENCY_MS}:
        assert line[field] == on_lambda[field], field
    assert line[metrics.PREDICTIONS] == 2 and line[metrics.LATENCY_MS] > 0
    assert logged[1]["route"] == serving.HEALTH_PATH and logged[1][metrics.PREDICTIONS] == 0
    assert {r.levelno for r in records} == {logging.INFO}


def test_without_a_request_id_the_invocation_id_is_used(environ) -> None:
    with hosted(dict(environ)) as host:
        answer = call(host, "POST", serving.PREDICT_PATH, GOOD)
        logged = lines(host)
    rid = answer.headers[serving.REQUEST_ID_HEADER]
    assert str(uuid.UUID(rid)) == rid, rid  # the host's invocation id
    assert answer.json()["request_id"] == rid == logged[-1]["request_id"]


# --- loading, canary, settings --------------------------------------------------------------


def test_a_model_that_cannot_load_answers_503_naming_it(environ, artifact_copy) -> None:
    (artifact_copy / "model.onnx").write_bytes(b"tampered")
    with hosted({**environ, serving.ENV_MODEL_URI: str(artifact_copy)}) as host:
        predict = call(host, "POST", serving.PREDICT_PATH, GOOD)
        health = call(host, "GET", serving.HEALTH_PATH)
        elsewhere = call(host, "GET", "/elsewhere")
        logged = lines(host)
        failures = [r.getMessage() for r in host.records if r.levelno == logging.ERROR]
    assert predict.status == 503 and "model.onnx" in refusal(predict)["error"]
    assert health.status == 503 and elsewhere.status == 404
    assert [line[metrics.ERRORS_5XX] for line in logged] == [1, 1, 0]
    assert any("model load failed" in message for message in failures), failures


def _canary_share(request_id: str) -> float:
    """Where the Service places a request id in the canary split (deploy/service.choose)."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2.0**64


def test_the_canary_from_app_settings_takes_its_weight_and_the_route_header_pins(
    environ, trained_artifact, tmp_path
) -> None:
    canary = tmp_path / "canary"
    shutil.copytree(trained_artifact, canary)
    settings = {
        **environ,
        serving.ENV_CANARY_URI: str(canary),
        serving.ENV_CANARY_VERSION: "4",
        serving.ENV_CANARY_WEIGHT: "0.25",
    }
    ids = [f"split-{i}" for i in range(80)]
    with hosted(settings) as host:
        health = call(host, "GET", serving.HEALTH_PATH).json()
        served = {
            rid: call(host, "POST", serving.PREDICT_PATH, GOOD, {serving.REQUEST_ID_HEADER: rid})
            for rid in ids
        }
        pinned = {
            route: call(host, "POST", serving.PREDICT_PATH, GOOD, {serving.ROUTE_HEADER: route})
            for route in ("live", "canary")
        }
    assert health["canary"] == {"version": 4, "weight": 0.25}, health
    versions = {rid: answer.headers[serving.VERSION_HEADER] for rid, answer in served.items()}
    expected = {rid: "4" if _canary_share(rid) < 0.25 else "3" for rid in ids}
    assert versions == expected
    assert 0 < list(versions.values()).count("4") < len(ids)  # both sides answered
    assert pinned["live"].headers[serving.VERSION_HEADER] == "3"
    assert pinned["canary"].headers[serving.VERSION_HEADER] == "4"


def test_a_settings_change_restarts_the_worker_with_the_new_model(
    environ, trained_artifact, tmp_path
) -> None:
    settings = dict(environ)
    with hosted(settings) as host:
        before = call(host, "GET", serving.HEALTH_PATH).json()
        again = call(host, "GET", serving.HEALTH_PATH).json()
        started = host.workers_started
        newer = tmp_path / "v5"
        shutil.copytree(trained_artifact, newer)
        settings.update({serving.ENV_MODEL_URI: str(newer), serving.ENV_MODEL_VERSION: "5"})
        after = call(host, "POST", serving.PREDICT_PATH, GOOD)
        assert host.workers_started == started + 1
    assert before["version"] == again["version"] == 3 and started == 1
    assert after.status == 200 and after.headers[serving.VERSION_HEADER] == "5"


# --- Blob: the model and the capture on Azurite -----------------------------------------------


def _container(azurite: str, name: str) -> ContainerClient:
    credential = AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)
    client = ContainerClient.from_container_url(f"{azurite}/{name}", credential=credential)
    client.create_container()
    return client


@pytest.fixture
def models(azurite: str) -> Iterator[ContainerClient]:
    client = _container(azurite, f"models-{uuid.uuid4().hex[:12]}")
    yield client
    client.delete_container()


def _store(container: ContainerClient, artifact: Path, prefix: str) -> str:
    """The artifact's files under `prefix`, manifest last, as a store writes them; its URL."""
    names = sorted(p.name for p in artifact.iterdir() if p.name != "MANIFEST.json")
    for name in [*names, "MANIFEST.json"]:
        container.upload_blob(f"{prefix}/{name}", (artifact / name).read_bytes())
    return f"{container.url}/{prefix}"


def test_a_model_is_fetched_from_its_blob_url_and_verified(environ, trained_artifact, models):
    uri = _store(models, trained_artifact, layout.artifact_key("credit", "run-1"))
    assert azure_blob.parse(uri).emulated  # type: ignore[union-attr]
    expected = Service.from_env(environ).handle(
        "POST", serving.PREDICT_PATH, {**JSON, serving.REQUEST_ID_HEADER: "blob-1"}, GOOD
    )
    with hosted({**environ, serving.ENV_MODEL_URI: uri}) as host:
        answer = call(
            host, "POST", serving.PREDICT_PATH, GOOD, {serving.REQUEST_ID_HEADER: "blob-1"}
        )
    assert answer.status == 200, answer
    assert answer.json() == json.loads(expected.body)


def test_a_changed_or_missing_blob_is_refused_by_name(environ, trained_artifact, models):
    tampered = _store(models, trained_artifact, "artifacts/credit/tampered")
    models.upload_blob("artifacts/credit/tampered/model.onnx", b"not the model", overwrite=True)
    with hosted({**environ, serving.ENV_MODEL_URI: tampered}) as host:
        changed = call(host, "POST", serving.PREDICT_PATH, GOOD)
    assert changed.status == 503
    assert "model.onnx" in refusal(changed)["error"] and "sha256" in refusal(changed)["error"]

    nothing = f"{models.url}/artifacts/credit/never-stored"
    with hosted({**environ, serving.ENV_MODEL_URI: nothing}) as host:
        missing = call(host, "POST", serving.PREDICT_PATH, GOOD)
    assert missing.status == 503
    assert "never-stored/MANIFEST.json: no such blob" in refusal(missing)["error"]


def test_a_blob_url_with_a_sas_token_is_refused() -> None:
    with pytest.raises(ValueError, match="SAS"):
        azure_blob.parse("https://acct.blob.core.windows.net/models/a?sv=2024&sig=secret")
    assert azure_blob.parse("https://example.com/models/a") is None
    assert azure_blob.parse("http://127.0.0.1:9/elsewhere/models/a") is None
    found = azure_blob.parse("https://acct.blob.core.windows.net/models/artifacts/m/r")
    assert found == azure_blob.BlobUrl(
        "https://acct.blob.core.windows.net", "models", "artifacts/m/r", emulated=False
    )


class IdentityEndpoint:
    """A loopback stand-in for App Service's managed identity endpoint (IDENTITY_ENDPOINT).
    Answers exactly one request: GET <path>?api-version=2019-08-01&resource=<r>&client_id=<c>
    with the X-IDENTITY-HEADER the platform set, by a bearer token for <r>; anything else 400.
    Keeps every request's query and identity header."""

    def __init__(self) -> None:
        seen: list[dict[str, Any]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                seen.append({**query, "header": self.headers.get("x-identity-header")})
                status, body = 400, b"{}"
                if query.get("api-version") == "2019-08-01" and "resource" in query:
                    status, body = 200, json.dumps({
                        "access_token": f"token-for-{query.get('client_id')}",
                        "expires_on": "4102444800", "resource": query["resource"],
                        "token_type": "Bearer",
                    }).encode()  # fmt: skip
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/msi/token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_in_azure_the_endpoint_signs_in_as_its_user_assigned_identity(monkeypatch) -> None:
    identity = IdentityEndpoint()
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity.url)  # what App Service sets
    monkeypatch.setenv("IDENTITY_HEADER", "platform-secret")
    try:
        location = azure_blob.parse("https://acct.blob.core.windows.net/captures")
        assert location is not None and not location.emulated
        signed_in = azure_blob.credential(location, {azure_blob.ENV_CLIENT_ID: "client-1"})
        token = signed_in.get_token("https://storage.azure.com/.default")
    finally:
        identity.close()
    assert token.token == "token-for-client-1"
    assert identity.seen == [
        {
            "api-version": "2019-08-01",
            "resource": "https://storage.azure.com",
            "client_id": "client-1",
            "header": "platform-secret",
        }
    ]
    # Azurite is signed with its published key, never a token
    emulated = azure_blob.parse(f"http://127.0.0.1:1/{AZURITE_ACCOUNT}/captures")
    assert isinstance(azure_blob.credential(emulated), AzureNamedKeyCredential)  # type: ignore[arg-type]


def test_capture_writes_the_documented_lines_to_the_container_without_personal_columns(
    environ, azurite
) -> None:
    captures = _container(azurite, f"captures-{uuid.uuid4().hex[:12]}")
    # a full batch (1000 rows) is written at once by the capture's thread; no clock to wait on
    rows = [{**ROW, "age": 20 + i % 50, "customer_id": f"C-{i}"} for i in range(serving.MAX_ROWS)]
    settings = {**environ, serving.ENV_CAPTURE_URI: captures.url}
    with hosted(settings) as host:
        answer = call(
            host,
            "POST",
            serving.PREDICT_PATH,
            json.dumps({"instances": rows}).encode(),
            {serving.REQUEST_ID_HEADER: "captured-1"},
        )
        assert answer.status == 200, answer
        names = wait_until(lambda: [b.name for b in captures.list_blobs()])
    [name] = names
    assert name.startswith(layout.capture_partition("credit", 3)), name
    blob = captures.get_blob_client(name)
    assert blob.get_blob_properties().content_settings.content_type == "application/x-ndjson"
    written = [json.loads(x) for x in blob.download_blob().readall().splitlines()]
    assert len(written) == serving.MAX_ROWS
    first = written[0]
    assert set(first) == {
        "request_id", "row", "time", "model", "version", "inputs", "prediction", "probabilities",
    }  # fmt: skip
    assert (first["request_id"], first["model"], first["version"]) == ("captured-1", "credit", 3)
    assert first["inputs"] == ROW | {"age": 20}
    assert not [line for line in written if "customer_id" in line["inputs"]]
    assert [line["prediction"] for line in written] == answer.json()["predictions"]
    captures.delete_container()


def test_a_capture_that_cannot_write_never_fails_a_request(environ, azurite) -> None:
    rows = [ROW] * serving.MAX_ROWS
    settings = {**environ, serving.ENV_CAPTURE_URI: f"{azurite}/no-such-container"}
    with hosted(settings) as host:
        answers = [
            call(host, "POST", serving.PREDICT_PATH, json.dumps({"instances": rows}).encode())
            for _ in range(2)
        ]
        capture = host.worker().module.endpoint.tap.capture
        wait_until(lambda: capture.counters()["failed"] >= 1)
    assert [a.status for a in answers] == [200, 200]


def test_a_bad_capture_setting_leaves_the_function_serving(environ) -> None:
    with hosted({**environ, serving.ENV_CAPTURE_URI: "https://example.com/captures"}) as host:
        answer = call(host, "POST", serving.PREDICT_PATH, GOOD)
        disabled = [r.getMessage() for r in host.records if "capture disabled" in r.getMessage()]
    assert answer.status == 200, answer
    assert disabled and serving.ENV_CAPTURE_URI in disabled[0], disabled
