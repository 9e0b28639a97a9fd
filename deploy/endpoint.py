"""What a serverless entry point keeps across invocations, written once for each of them.

The Lambda handler and the Azure function differ in how a request arrives and where a log line
goes; everything else is here:

- the model (and the capture) load once per worker from the environment `Service.from_env`
  reads; a load that fails answers 503 naming the problem (404 off the routes) and is tried
  again by a request at least `RETRY_SECONDS` later, by one request at a time, never by every
  request;
- each request is answered by the Service, under the client's request id when it sends a
  well-formed one, else the platform's invocation id (the platform's logs correlate on it); an
  event the entry point cannot read is a 400, a bug in the translation a 500, never a traceback;
- each request makes one structured record: request id, model, version, route, method,
  status, and Tandem's endpoint metrics (`contract.metrics`): latency, rows predicted, 4xx, 5xx;
- capture (TANDEM_CAPTURE_URI / TANDEM_CAPTURE_SAMPLE) drops the spec's personal columns (no
  pseudonymisation key reaches a function), and a capture failure never fails a request. A
  platform that freezes an idle worker (Lambda) flushes what waits from the request path once
  it is `CAPTURE_FLUSH_SECONDS` old; one that keeps the worker running (Azure Functions) lets
  the capture's own thread write on that period instead, and no request ever waits for it.

Several requests may be answered at once (the Azure Functions Python worker runs a function in
a thread pool): what one request learns about itself stays on its thread.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from contract import metrics
from contract.serving import (
    ENV_CAPTURE_URI,
    ENV_MODEL_NAME,
    HEALTH_PATH,
    LOAD_FAILED,
    PREDICT_PATH,
    REQUEST_ID_HEADER,
    VERSION_HEADER,
)
from deploy.service import REQUEST_ID_PATTERN, Response, Service

RETRY_SECONDS = 30.0  # a failed model load is tried again no sooner than this
CAPTURE_FLUSH_SECONDS = 10.0  # captured requests wait at most about this long in memory
CAPTURE_FLUSH_TIMEOUT = 2.0  # the longest one request waits for a capture flush
ROUTES = frozenset({HEALTH_PATH, PREDICT_PATH})
JSON_TYPE = "application/json"
_ERROR_CHARS = 300  # a load error in a 503 or a log line is cut to this length
_encoder = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))

# A request as an entry point reads it from its platform: (method, path, headers, body).
Request = tuple[str, str, dict[str, str], bytes]


class BadRequest(ValueError):
    """What the platform delivered is not a request the endpoint can read: a 400."""


class Tap:
    """Sees every answered predict (the Service hands it to its capture): keeps the request's
    row count for its record, on the request's own thread, and passes the request on to the
    real capture, if any."""

    def __init__(self, capture: Any, clock: Callable[[], float]) -> None:
        self.capture = capture
        self.clock = clock
        self.waiting_since: float | None = None  # when the oldest unflushed capture came
        self._local = threading.local()

    @property
    def rows(self) -> int:
        """Rows the current thread's last predict answered."""
        return getattr(self._local, "rows", 0)

    @rows.setter
    def rows(self, value: int) -> None:
        self._local.rows = value

    def offer(self, model, version, request_id, payload, answer) -> None:
        self.rows = len(answer.get("predictions") or ())
        if self.capture is not None:
            self.capture.offer(model, version, request_id, payload, answer)
            if self.waiting_since is None:
                self.waiting_since = self.clock()


class Endpoint:
    """A function's state across invocations: the Service (or why it failed to load) and the
    capture. A platform's entry point subclasses it, turns its event into a `Request` for
    `serve`, and says where lines go (`write_line`, `write_request`).

    `freezes` says the platform freezes an idle worker (see the module doc); `clock` (seconds,
    monotonic) and `load` are what tests inject."""

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        freezes: bool,
        clock: Callable[[], float] = time.monotonic,
        load: Callable[[Mapping[str, str]], Service] | None = None,
    ) -> None:
        self.environ = environ
        self.freezes = freezes
        self.clock = clock
        self._load = load or (lambda env: Service.from_env(env))
        self._loading = threading.Lock()
        self.service: Service | None = None
        self.load_error: str | None = None
        self.loaded_at: float | None = None  # when the last load was tried
        self.tap = Tap(None, clock)
        self.try_load()

    # --- where lines go (the platform's) ---------------------------------------------------

    def write_line(self, fields: dict[str, Any]) -> None:
        """Log one structured line (a load failure, capture disabled, a translation bug)."""
        raise NotImplementedError

    def write_request(
        self,
        model: str | None,
        version: int | str | None,
        properties: dict[str, Any],
        values: dict[str, float],
    ) -> None:
        """Log the request's record: `properties` (level, message, request_id, model, version,
        route, method, status) and `values` (`contract.metrics.ENDPOINT_METRICS`)."""
        raise NotImplementedError

    # --- loading ----------------------------------------------------------------------------

    def try_load(self) -> bool:
        """Load the model (and the capture) now; on failure keep why, for the 503s."""
        self.loaded_at = self.clock()
        try:
            service = self._load(self.environ)
        except Exception as exc:  # any load failure: named in the 503s, never raised
            self.load_error = cut(f"{type(exc).__name__}: {exc}")
            self.service = None
            self._quietly(self.write_line, {"level": "ERROR", "message": "model load failed",
                                            "error": self.load_error})  # fmt: skip
            return False
        tap = Tap(self._capture(service), self.clock)
        service.capture = tap
        self.tap, self.service, self.load_error = tap, service, None
        return True

    def _capture(self, service: Service) -> Any:
        if not self.environ.get(ENV_CAPTURE_URI, "").strip():
            return None  # capture is off: the capture module is not even imported
        live = service.routing.live
        try:
            from deploy.capture import Capture  # only an endpoint that captures pays for it

            personal = ((live.card.get("spec") or {}).get("personal_data") or ()) if live else ()
            # A worker that keeps running writes from the capture's own thread on the period
            # a frozen one flushes from the request path (see the module doc).
            timing = {} if self.freezes else {"flush_seconds": CAPTURE_FLUSH_SECONDS}
            # no pseudonymisation key reaches the function: personal columns are dropped
            return Capture.from_env(self.environ, personal_columns=personal, key=None, **timing)
        except Exception as exc:  # a bad capture setting must not take the endpoint down
            self._quietly(self.write_line, _failure("capture disabled", exc))
            return None

    def _retry_due(self) -> bool:
        return (
            self.service is None
            and self.load_error is not None
            and self.clock() - (self.loaded_at or 0.0) >= RETRY_SECONDS
        )

    # --- requests ---------------------------------------------------------------------------

    def serve(self, read: Callable[[], Request], invocation_id: str) -> Response:
        """Answer one request: `read()` gives (method, path, headers, body) or raises
        BadRequest; `invocation_id` is the platform's id for it. Never raises."""
        started = time.perf_counter()
        method = path = None
        request_id = invocation_id
        self.tap.rows = 0
        try:
            method, path, headers, body = read()
            given = headers.get(REQUEST_ID_HEADER)
            if not (isinstance(given, str) and REQUEST_ID_PATTERN.fullmatch(given)):
                headers[REQUEST_ID_HEADER] = request_id  # the client's, else the platform's
            request_id = headers[REQUEST_ID_HEADER]
            response = self.answer(method, path, headers, body)
        except BadRequest as exc:
            response = error(400, str(exc), request_id)
        except Exception as exc:  # a bug in the translation: a 500, never a traceback
            response = error(500, "internal error", request_id)
            self._quietly(self.write_line, _failure("handler failed", exc))
        latency_ms = (time.perf_counter() - started) * 1000.0
        self._record(method, path, response, latency_ms)
        if self.freezes:
            self.flush_capture()
        return response

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        """The Service's answer, or the endpoint's own while no model is loaded."""
        if self._retry_due() and self._loading.acquire(blocking=False):
            try:  # one request retries; the others answer with the last error meanwhile
                if self._retry_due():
                    self.try_load()
            finally:
                self._loading.release()
        service = self.service
        if service is None:
            rid = headers[REQUEST_ID_HEADER]
            if path not in ROUTES:
                return error(404, "no such route", rid)
            return error(503, f"{LOAD_FAILED}: {self.load_error}", rid)
        return service.handle(method, path, headers, body)

    def _record(
        self, method: str | None, path: str | None, response: Response, latency_ms: float
    ) -> None:
        service = self.service
        live = service.routing.live if service is not None else None
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
            "route": path if path in ROUTES else "other",
            "method": method if method and method.isalpha() and len(method) <= 16 else "other",
            "status": status,
        }
        values = {
            metrics.LATENCY_MS: round(latency_ms, 3),
            metrics.PREDICTIONS: rows,
            metrics.ERRORS_4XX: int(400 <= status < 500),
            metrics.ERRORS_5XX: int(status >= 500),
        }
        self._quietly(self.write_request, model, properties["version"], properties, values)

    def flush_capture(self) -> None:
        """Write what the capture holds once it has waited `CAPTURE_FLUSH_SECONDS`."""
        tap = self.tap
        if tap.capture is None or tap.waiting_since is None:
            return
        if self.clock() - tap.waiting_since < CAPTURE_FLUSH_SECONDS:
            return
        tap.waiting_since = None
        # the capture counts its own failures; the request is answered regardless
        with contextlib.suppress(Exception):
            tap.capture.flush(timeout=CAPTURE_FLUSH_TIMEOUT)

    @staticmethod
    def _quietly(write: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(Exception):  # a log line must never fail a request
            write(*args)


def record(
    model: str | None,
    version: int | str | None,
    properties: Mapping[str, Any],
    values: Mapping[str, float],
) -> dict[str, Any]:
    """A request's record as one flat object: the properties, the metric dimensions (`Model`,
    `Version`, never empty) and the metric values, the fields the Lambda's EMF line carries."""
    known = "none" if version is None else version
    return {
        **properties,
        **metrics.dimensions(model or metrics.UNKNOWN_MODEL, known),
        **values,
    }


def line(fields: Mapping[str, Any]) -> str:
    """One line of ASCII JSON (a lone surrogate cannot break a log line)."""
    return _encoder.encode(fields)


def error(status: int, message: str, request_id: str) -> Response:
    """The Service's error shape, for what is refused before the Service sees it."""
    body = line({"error": message, "field": None, "request_id": request_id})
    return Response(status, {"content-type": JSON_TYPE, REQUEST_ID_HEADER: request_id},
                    body.encode())  # fmt: skip


def _failure(message: str, exc: Exception) -> dict[str, Any]:
    return {"level": "ERROR", "message": message, "error": cut(f"{type(exc).__name__}: {exc}")}


def cut(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"
