"""Lambda entry point for the inference endpoint: Function URL and API Gateway HTTP API events.

Both deliver the payload format 2.0 event
(https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html)
and accept the same proxy response
(https://docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html#urls-response-payload).
The handler only translates: the event becomes `Service.handle(method, path, headers, body)`,
which decides everything a request gets (routes, limits, errors, the answer), as it does for
every other entry point.

What every serverless entry point does the same way lives in deploy/endpoint.py: the model
loads once per execution environment, at import (Lambda's init phase); a load that fails
answers 503 naming the problem and is tried again on a request at least `RETRY_SECONDS`
later; the client's request id is kept, else Lambda's own is used; capture drops the spec's
personal columns and never fails a request.

Each request writes one JSON line to stdout that is both the structured log (request id,
model, version, route, status, latency) and an Embedded Metric Format record (latency, rows
predicted, 4xx, 5xx): CloudWatch extracts the metrics from the log, no API call is made.
Lambda freezes an idle environment and gives no shutdown hook without an extension, so the
handler flushes the capture itself once what waits is `CAPTURE_FLUSH_SECONDS` old.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from deploy.aws_lambda import emf
from deploy.endpoint import CAPTURE_FLUSH_SECONDS as CAPTURE_FLUSH_SECONDS
from deploy.endpoint import RETRY_SECONDS as RETRY_SECONDS
from deploy.endpoint import BadRequest, Endpoint
from deploy.service import REQUEST_ID_PATTERN, Service


class BadEvent(BadRequest):
    """An event that is not a payload format 2.0 HTTP request."""


def request_of(event: Any) -> tuple[str, str, dict[str, str], bytes]:
    """(method, path, headers, body) of a Function URL or HTTP API event; raises BadEvent.

    The path is `rawPath` without the API Gateway stage prefix (`/prod/predict` on stage
    `prod` is `/predict`); `$default` (a Function URL, or an HTTP API's default stage) has
    none. A base64 body (`isBase64Encoded`) is decoded strictly."""
    if not isinstance(event, Mapping):
        raise BadEvent("the event is not an object")
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, Mapping) else None
    method = http.get("method") if isinstance(http, Mapping) else None
    if not isinstance(method, str):
        raise BadEvent("the event has no requestContext.http.method (payload format 2.0)")
    path = event.get("rawPath", http.get("path"))
    if not isinstance(path, str):
        raise BadEvent("the event has no rawPath")
    stage = context.get("stage")
    if isinstance(stage, str) and stage and stage != "$default":
        prefix = "/" + stage
        if path == prefix or path.startswith(prefix + "/"):
            path = path[len(prefix) :] or "/"
    headers = event.get("headers")
    if headers is None:
        headers = {}
    elif not isinstance(headers, Mapping):
        raise BadEvent("the event's headers are not an object")
    # both event sources lowercase header names already; a hand-made event may not
    headers = {k.lower(): v for k, v in headers.items() if isinstance(k, str)}
    body = event.get("body")
    encoded = event.get("isBase64Encoded", False)
    if not isinstance(encoded, bool):
        raise BadEvent("the event's isBase64Encoded is not a boolean")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        raise BadEvent("the event's body is not a string")
    elif encoded:
        import base64  # only a base64 body needs these
        import binascii

        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadEvent("the body is marked base64 but is not valid base64") from None
    else:
        data = body.encode("utf-8", "surrogatepass")  # the Service refuses invalid UTF-8
    return method.upper(), path, headers, data


class App(Endpoint):
    """The function's state across invocations (deploy/endpoint.py), with the clock and the
    output the tests inject: `write` takes each log line (stdout by default)."""

    def __init__(
        self,
        environ: Mapping[str, str] = os.environ,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        write: Callable[[str], Any] | None = None,
        load: Callable[[Mapping[str, str]], Service] | None = None,
    ) -> None:
        self.wall = wall
        self.write = write or _stdout_line
        super().__init__(environ, freezes=True, clock=clock, load=load)

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        invocation_id = _lambda_request_id(event, context) or os.urandom(16).hex()
        response = self.serve(lambda: request_of(event), invocation_id)
        return {
            "statusCode": response.status,
            "headers": response.headers,
            "body": response.body.decode("utf-8"),
            "isBase64Encoded": False,
        }

    def write_line(self, fields: dict[str, Any]) -> None:
        self.write(emf.line(fields))

    def write_request(self, model, version, properties, values) -> None:
        at = int(self.wall() * 1000)
        fields = emf.record(
            model=model, version=version, values=values, timestamp_ms=at, properties=properties
        )
        self.write(emf.line(fields))


def _stdout_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _lambda_request_id(event: Any, context: Any) -> str:
    """Lambda's own request id (logs correlate on it), when it looks like a request id."""
    candidate = getattr(context, "aws_request_id", None)
    if not isinstance(candidate, str) and isinstance(event, Mapping):
        context_ = event.get("requestContext")
        candidate = context_.get("requestId") if isinstance(context_, Mapping) else None
    if isinstance(candidate, str) and REQUEST_ID_PATTERN.fullmatch(candidate):
        return candidate
    return ""


# Loaded once per execution environment, in Lambda's init phase.
app = App()


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The function's entry point (`bundle.LAMBDA_HANDLER`)."""
    return app(event, context)
