"""Lambda entry point for the inference endpoint: Function URL and API Gateway HTTP API events.

Both deliver the payload format 2.0 event
(https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html)
and accept the same proxy response
(https://docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html#urls-response-payload).
The handler only translates: the event becomes `Service.handle(method, path, headers, body)`,
which decides everything a request gets (routes, limits, errors, the answer), as it does for
every other entry point.

The model loads once per execution environment, at import (Lambda's init phase), from the
environment that `Service.from_env` reads. A load that fails answers 503 naming the problem
and is tried again on a request at least `RETRY_SECONDS` later, never on every request.

Each request writes one JSON line to stdout that is both the structured log (request id,
model, version, route, status, latency) and an Embedded Metric Format record (latency, rows
predicted, 4xx, 5xx): CloudWatch extracts the metrics from the log, no API call is made.

Capture (TANDEM_CAPTURE_URI / TANDEM_CAPTURE_SAMPLE) drops the spec's personal columns: no
pseudonymisation key reaches the function. Lambda freezes an idle environment and gives no
shutdown hook without an extension, so the handler flushes the capture itself once what
waits is `CAPTURE_FLUSH_SECONDS` old; a capture failure never fails a request.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from contract import metrics
from contract.serving import (
    ENV_CAPTURE_URI,
    ENV_MODEL_NAME,
    HEALTH_PATH,
    PREDICT_PATH,
    REQUEST_ID_HEADER,
    VERSION_HEADER,
)
from deploy.aws_lambda import emf
from deploy.service import REQUEST_ID_PATTERN, Response, Service

RETRY_SECONDS = 30.0  # a failed model load is tried again no sooner than this
CAPTURE_FLUSH_SECONDS = 10.0  # captured requests wait at most about this long in memory
CAPTURE_FLUSH_TIMEOUT = 2.0  # the longest one request waits for a capture flush
_ERROR_CHARS = 300  # a load error in a 503 or a log line is cut to this length
_ROUTES = frozenset({HEALTH_PATH, PREDICT_PATH})
_JSON = "application/json"


class BadEvent(ValueError):
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


class _Tap:
    """Sees every answered predict (the Service hands it to its capture): keeps the row
    count for the metrics and passes the request on to the real capture, if any."""

    def __init__(self, capture: Any, clock: Callable[[], float]) -> None:
        self.capture = capture
        self.clock = clock
        self.rows = 0
        self.waiting_since: float | None = None  # when the oldest unflushed capture came

    def offer(self, model, version, request_id, payload, answer) -> None:
        self.rows = len(answer.get("predictions") or ())
        if self.capture is not None:
            self.capture.offer(model, version, request_id, payload, answer)
            if self.waiting_since is None:
                self.waiting_since = self.clock()


class App:
    """The function's state across invocations: the Service (or why it failed to load), the
    capture, and the clock and output the tests inject."""

    def __init__(
        self,
        environ: Mapping[str, str] = os.environ,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        write: Callable[[str], Any] | None = None,
        load: Callable[[Mapping[str, str]], Service] | None = None,
    ) -> None:
        self.environ = environ
        self.clock = clock
        self.wall = wall
        self.write = write or _stdout_line
        self._load = load or (lambda env: Service.from_env(env))
        self.service: Service | None = None
        self.load_error: str | None = None
        self.loaded_at: float | None = None  # when the last load was tried
        self.tap = _Tap(None, clock)
        self.try_load()

    def try_load(self) -> bool:
        """Load the model (and the capture) now; on failure keep why, for the 503s."""
        self.loaded_at = self.clock()
        try:
            service = self._load(self.environ)
        except Exception as exc:  # any load failure: named in the 503s, never raised
            self.load_error = _cut(f"{type(exc).__name__}: {exc}")
            self.service = None
            self._log_line({"level": "ERROR", "message": "model load failed",
                            "error": self.load_error})  # fmt: skip
            return False
        self.service, self.load_error = service, None
        self.tap = _Tap(self._capture(service), self.clock)
        service.capture = self.tap
        return True

    def _capture(self, service: Service) -> Any:
        if not self.environ.get(ENV_CAPTURE_URI, "").strip():
            return None  # capture is off: the capture module is not even imported
        live = service.routing.live
        try:
            from deploy.capture import Capture  # only an endpoint that captures pays for it

            personal = ((live.card.get("spec") or {}).get("personal_data") or ()) if live else ()
            # no pseudonymisation key reaches the function: personal columns are dropped
            return Capture.from_env(self.environ, personal_columns=personal, key=None)
        except Exception as exc:  # a bad capture setting must not take the endpoint down
            self._log_line({"level": "ERROR", "message": "capture disabled",
                            "error": _cut(f"{type(exc).__name__}: {exc}")})  # fmt: skip
            return None

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        method = path = None
        request_id = _lambda_request_id(event, context) or os.urandom(16).hex()
        try:
            method, path, headers, body = request_of(event)
            given = headers.get(REQUEST_ID_HEADER)
            if not (isinstance(given, str) and REQUEST_ID_PATTERN.fullmatch(given)):
                headers[REQUEST_ID_HEADER] = request_id  # the client's, else Lambda's
            request_id = headers[REQUEST_ID_HEADER]
            response = self._answer(method, path, headers, body)
        except BadEvent as exc:
            response = _error(400, str(exc), request_id)
        except Exception as exc:  # a bug in the translation: a 500, never a traceback
            response = _error(500, "internal error", request_id)
            self._log_line({"level": "ERROR", "message": "handler failed",
                            "error": _cut(f"{type(exc).__name__}: {exc}")})  # fmt: skip
        latency_ms = (time.perf_counter() - started) * 1000.0
        self._log_request(method, path, response, latency_ms)
        self._flush_capture()
        return {
            "statusCode": response.status,
            "headers": response.headers,
            "body": response.body.decode("utf-8"),
            "isBase64Encoded": False,
        }

    def _answer(self, method: str, path: str, headers: dict, body: bytes) -> Response:
        self.tap.rows = 0
        if (
            self.service is None
            and self.load_error is not None
            and self.clock() - (self.loaded_at or 0.0) >= RETRY_SECONDS
        ):
            self.try_load()
        if self.service is None:
            rid = headers[REQUEST_ID_HEADER]
            if path not in _ROUTES:
                return _error(404, "no such route", rid)
            return _error(503, f"the model could not be loaded: {self.load_error}", rid)
        return self.service.handle(method, path, headers, body)

    def _log_request(
        self, method: str | None, path: str | None, response: Response, latency_ms: float
    ) -> None:
        live = self.service.routing.live if self.service is not None else None
        model = live.name if live is not None else self.environ.get(ENV_MODEL_NAME) or None
        version = response.headers.get(VERSION_HEADER)
        status = response.status
        rows = self.tap.rows if status == 200 and path == PREDICT_PATH else 0
        properties = {
            "level": "ERROR" if status >= 500 else "INFO",
            "message": "request",
            "request_id": response.headers.get(REQUEST_ID_HEADER),
            "model": model,
            "version": int(version) if version and version.isdigit() else version,
            "route": path if path in _ROUTES else "other",
            "method": method if method and method.isalpha() and len(method) <= 16 else "other",
            "status": status,
        }
        values = {
            metrics.LATENCY_MS: round(latency_ms, 3),
            metrics.PREDICTIONS: rows,
            metrics.ERRORS_4XX: int(400 <= status < 500),
            metrics.ERRORS_5XX: int(status >= 500),
        }
        with contextlib.suppress(Exception):  # a log line must never fail a request
            record = emf.record(
                model=model,
                version=properties["version"],
                values=values,
                timestamp_ms=int(self.wall() * 1000),
                properties=properties,
            )
            self.write(emf.line(record))

    def _log_line(self, fields: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            self.write(emf.line(fields))

    def _flush_capture(self) -> None:
        tap = self.tap
        if tap.capture is None or tap.waiting_since is None:
            return
        if self.clock() - tap.waiting_since < CAPTURE_FLUSH_SECONDS:
            return
        tap.waiting_since = None
        # the capture counts its own failures; the request is answered regardless
        with contextlib.suppress(Exception):
            tap.capture.flush(timeout=CAPTURE_FLUSH_TIMEOUT)


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


def _error(status: int, message: str, request_id: str) -> Response:
    """The Service's error shape, for what is refused before the Service sees it."""
    body = emf.line({"error": message, "field": None, "request_id": request_id})
    return Response(status, {"content-type": _JSON, REQUEST_ID_HEADER: request_id}, body.encode())


def _cut(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"


# Loaded once per execution environment, in Lambda's init phase.
app = App()


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The function's entry point (`bundle.LAMBDA_HANDLER`)."""
    return app(event, context)
