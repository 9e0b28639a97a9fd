"""Every entry point answers the same request with the same answer: the Lambda handler (a
Function URL event), the Azure function (over HTTP, behind a stand-in for the Functions host),
the local server over HTTP and the serving container's entry command, each against the Service
they all wrap, for one artifact and one environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contract import serving
from deploy.aws_lambda.handler import App
from deploy.server import Server
from deploy.service import Service
from tests.azure_function_host import FUNCTION_APP, FunctionHost
from tests.integration.http_helpers import JSON, Client
from tests.integration.test_container_contracts import container
from tests.integration.test_server import ROW

REQUESTS = [
    {"instances": [ROW, {**ROW, "age": 63}]},  # records
    {"inputs": {key: [value, value] for key, value in ROW.items()}},  # columns
    {"instances": [{**ROW, "age": "old"}]},  # a wrong type: 422 naming the field
    {"instances": [{**ROW, "unknown": 1}]},  # an unknown field: 422
    {"rows": []},  # neither shape: 4xx
]

AZURE_KEY = "agreement-key"


@pytest.fixture(scope="module")
def environ(trained_artifact: Path) -> dict[str, str]:
    return {
        serving.ENV_MODEL_URI: str(trained_artifact),
        serving.ENV_MODEL_NAME: "credit",
        serving.ENV_MODEL_VERSION: "3",
    }


def _expected(service: Service, body: bytes, request_id: str) -> tuple[int, dict[str, Any]]:
    headers = {**JSON, serving.REQUEST_ID_HEADER: request_id}
    response = service.handle("POST", serving.PREDICT_PATH, headers, body)
    return response.status, json.loads(response.body)


def _event(body: bytes, request_id: str) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": serving.PREDICT_PATH,
        "rawQueryString": "",
        "headers": {**JSON, serving.REQUEST_ID_HEADER: request_id},
        "requestContext": {"http": {"method": "POST", "path": serving.PREDICT_PATH},
                           "stage": "$default", "requestId": "lambda-id"},
        "body": body.decode(),
        "isBase64Encoded": False,
    }  # fmt: skip


def _over_http(
    url: str, body: bytes, request_id: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    with Client(url) as client:
        sent = {**JSON, serving.REQUEST_ID_HEADER: request_id, **(headers or {})}
        answer = client.request("POST", serving.PREDICT_PATH, body, sent)
        return answer.status, answer.json()


def test_lambda_function_server_and_container_answer_like_the_service(environ, tmp_path) -> None:
    service = Service.from_env(environ)
    bodies = [json.dumps(request).encode() for request in REQUESTS]
    expected = [_expected(service, body, f"agree-{i}") for i, body in enumerate(bodies)]
    assert [status for status, _ in expected] == [200, 200, 422, 422, 422]
    assert expected[0][1]["predictions"] == expected[1][1]["predictions"]  # records == columns

    function = App(environ, write=lambda line: None)
    from_lambda = []
    for i, body in enumerate(bodies):
        response = function(_event(body, f"agree-{i}"), None)
        from_lambda.append((response["statusCode"], json.loads(response["body"])))
    assert from_lambda == expected

    key = {FunctionHost.KEY_HEADER: AZURE_KEY}
    with FunctionHost(FUNCTION_APP, AZURE_KEY, lambda: environ) as host:
        from_azure = [
            _over_http(host.url, body, f"agree-{i}", key) for i, body in enumerate(bodies)
        ]
    assert from_azure == expected

    with Server(Service.from_env(environ)).start() as server:
        from_server = [_over_http(server.url, body, f"agree-{i}") for i, body in enumerate(bodies)]
    assert from_server == expected

    with container(environ) as (_, url):
        from_container = [_over_http(url, body, f"agree-{i}") for i, body in enumerate(bodies)]
    assert from_container == expected
