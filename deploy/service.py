"""One HTTP-shaped Service that every entry point calls: routing, limits, errors, the answer.

The Lambda handler, the local/container server and the Azure function translate their own
request into `handle(method, path, headers, body)` and the Response back; everything that
decides what a request gets (404/405/413/415/400/422/503, the canary split, the request id,
the JSON shape) lives here once. `handle` never raises: a bug becomes a 500 with a request
id, never a traceback to the client or a dead worker.

Depends on the standard library, the vocabulary in `contract/` and the inference core.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from contract.serving import (
    ENV_CANARY_URI,
    ENV_CANARY_VERSION,
    ENV_CANARY_WEIGHT,
    ENV_MAX_BODY_BYTES,
    ENV_MAX_ROWS,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
    HEALTH_PATH,
    MAX_BODY_BYTES,
    MAX_ROWS,
    PREDICT_PATH,
    REQUEST_ID_HEADER,
    ROUTE_HEADER,
    VERSION_HEADER,
)
from deploy.inference import Model, RequestError, echo


def _log() -> Any:
    import logging  # only a failure logs: off the cold start

    return logging.getLogger(__name__)


JSON_TYPE = "application/json"
# A request id the client sends is echoed only when it looks like one (no header injection,
# no megabyte ids in logs); otherwise the service makes its own.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ROUTES = ("live", "canary")


class Capture(Protocol):
    def offer(
        self,
        model: str,
        version: int | None,
        request_id: str,
        payload: dict[str, Any],
        answer: dict[str, Any],
    ) -> None: ...


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Routing:
    """What answers: swapped as one object, so a request sees one consistent pair."""

    live: Model | None
    canary: Model | None = None
    canary_weight: float = 0.0


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


_decoder = json.JSONDecoder(parse_constant=_refuse_constant)
_encoder = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity literals, bounded nesting. RequestError (400)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the body is not valid UTF-8 (byte {exc.start})", status=400) from None
    try:
        return _decoder.decode(text)
    except RecursionError:
        raise RequestError("the body is nested too deeply", status=400) from None
    except ValueError as exc:  # JSONDecodeError, a refused constant, an over-long integer
        message = str(exc)
        if len(message) > 200:
            message = message[:199] + "…"
        raise RequestError(f"the body is not valid JSON: {message}", status=400) from None


def choose(routing: Routing, request_id: str, route: str | None) -> Model | None:
    """The model for a request: pinned by the route header, else a deterministic share of
    request ids (sha256 of the id, read as a fraction of 2**64) goes to the canary."""
    if route == "canary":
        return routing.canary
    if route == "live" or routing.canary is None or routing.canary_weight <= 0.0:
        return routing.live
    digest = hashlib.sha256(request_id.encode()).digest()
    share = int.from_bytes(digest[:8], "big") / 2.0**64
    return routing.canary if share < routing.canary_weight else routing.live


class Service:
    """Health and predict over a live model and an optional canary."""

    def __init__(
        self,
        live: Model | None,
        canary: Model | None = None,
        canary_weight: float = 0.0,
        *,
        health_paths: frozenset[str] = frozenset({HEALTH_PATH}),
        predict_paths: frozenset[str] = frozenset({PREDICT_PATH}),
        max_rows: int = MAX_ROWS,
        max_body_bytes: int = MAX_BODY_BYTES,
        capture: Capture | None = None,
    ) -> None:
        self.health_paths = frozenset(health_paths)
        self.predict_paths = frozenset(predict_paths)
        self.max_rows = int(max_rows)
        self.max_body_bytes = int(max_body_bytes)
        self.capture = capture
        self.routing = Routing(None)
        self.swap(live, canary, canary_weight)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **kw: Any) -> Service:
        """The live model from MODEL_URI (none when unset: every predict answers 503), the
        canary from CANARY_MODEL_URI and CANARY_WEIGHT, limits from TANDEM_MAX_*."""
        uri = environ.get(ENV_MODEL_URI, "").strip()
        name = environ.get(ENV_MODEL_NAME, "").strip() or None
        live = None
        if uri:
            live = Model.load(uri, name=name, version=_int(environ, ENV_MODEL_VERSION))
        canary = None
        weight = 0.0
        canary_uri = environ.get(ENV_CANARY_URI, "").strip()
        if canary_uri:
            canary = Model.load(canary_uri, name=name, version=_int(environ, ENV_CANARY_VERSION))
            weight = _float(environ, ENV_CANARY_WEIGHT) or 0.0
        limits = {
            "max_rows": _int(environ, ENV_MAX_ROWS),
            "max_body_bytes": _int(environ, ENV_MAX_BODY_BYTES),
        }
        kw = {**{k: v for k, v in limits.items() if v is not None}, **kw}
        return cls(live, canary, weight, **kw)

    @classmethod
    def from_state(cls, path: Path, **kw: Any) -> Service:
        """A Service for the local stack's state file (contract.serving.STATE_FILE):
        {"model", "live": {"version", "path"}, "canary": {"version", "path", "weight"} | null}."""
        state = json.loads(Path(path).read_text())
        name = state["model"]
        live = Model.load(state["live"]["path"], name=name, version=state["live"]["version"])
        canary, weight = None, 0.0
        if state.get("canary"):
            entry = state["canary"]
            canary = Model.load(entry["path"], name=name, version=entry["version"])
            weight = float(entry["weight"])
        return cls(live, canary, weight, **kw)

    def swap(self, live: Model | None, canary: Model | None = None, canary_weight: float = 0.0):
        """Replace what answers in one step (a reload): no request sees half of a change."""
        weight = float(canary_weight)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"canary weight must be between 0 and 1, got {canary_weight!r}")
        self.routing = Routing(live, canary, weight if canary is not None else 0.0)

    # --- requests -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request. Never raises."""
        request_id = ""
        try:
            lowered = _lowered(headers)
            request_id = _request_id(lowered.get(REQUEST_ID_HEADER))
            return self._handle(method, path, lowered, body, request_id)
        except Exception:  # a bug, not a bad request: say so without the traceback
            _log().exception("request %s failed", request_id)
            return _error(500, "internal error", None, request_id or _request_id(None))

    def _handle(
        self, method: Any, path: Any, headers: dict[str, str], body: Any, request_id: str
    ) -> Response:
        path = path.split("?", 1)[0] if isinstance(path, str) else ""
        routing = self.routing
        if path in self.health_paths:
            if method not in ("GET", "HEAD"):
                return _error(405, f"{_method(method)} is not allowed here; use GET", None,
                              request_id, {"allow": "GET, HEAD"})  # fmt: skip
            return self._health(routing, request_id)
        if path not in self.predict_paths:
            return _error(404, f"no route {echo(path)}", None, request_id)
        if method != "POST":
            return _error(405, f"{_method(method)} is not allowed here; use POST", None,
                          request_id, {"allow": "POST"})  # fmt: skip
        media = headers.get("content-type")
        if media is not None and not _is_json(media):
            return _error(
                415, f"content-type {echo(media)} is not {JSON_TYPE}", "content-type", request_id
            )
        if not isinstance(body, bytes | bytearray | memoryview):
            body = b"" if body is None else str(body).encode("utf-8", "surrogatepass")
        if len(body) > self.max_body_bytes:
            return _error(
                413,
                f"the body is {len(body)} bytes, more than the {self.max_body_bytes} allowed",
                None,
                request_id,
            )
        route = headers.get(ROUTE_HEADER)
        if route is not None and route not in ROUTES:
            return _error(400, f"{ROUTE_HEADER}: expected live or canary, got {echo(route)}",
                          ROUTE_HEADER, request_id)  # fmt: skip
        model = choose(routing, request_id, route)
        if model is None:
            which = "canary" if route == "canary" else "model"
            return _error(503, f"no {which} is loaded", None, request_id)
        try:
            payload = parse_json(bytes(body))
            answer = model.predict_payload(payload, max_rows=self.max_rows, request_id=request_id)
        except RequestError as exc:
            return _error(exc.status, exc.message, exc.field, request_id, model=model)
        if self.capture is not None:
            try:
                self.capture.offer(model.name, model.version, request_id, payload, answer)
            except Exception:  # the capture must never fail a request
                _log().exception("capture failed for request %s", request_id)
        return Response(200, _headers(request_id, model), _encoder.encode(answer).encode())

    def _health(self, routing: Routing, request_id: str) -> Response:
        live, canary = routing.live, routing.canary
        if live is None:
            body = {"status": "unavailable", "error": "no model is loaded", "model": None,
                    "version": None, "request_id": request_id}  # fmt: skip
            return Response(503, _headers(request_id), _encoder.encode(body).encode())
        body = {
            "status": "ok",
            "model": live.name,
            "version": live.version,
            "canary": (
                {"version": canary.version, "weight": routing.canary_weight} if canary else None
            ),
            "request_id": request_id,
        }
        return Response(200, _headers(request_id, live), _encoder.encode(body).encode())


def _lowered(headers: Any) -> dict[str, str]:
    if not headers:
        return {}
    items = headers.items() if hasattr(headers, "items") else headers
    lowered = {}
    for key, value in items:
        if isinstance(key, str) and isinstance(value, str):
            lowered[key.lower()] = value
    return lowered


# Generated ids: a random per-process prefix and a counter (unique across workers, and a
# fraction of uuid4's cost on the request path).
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count(1)


def _request_id(given: str | None) -> str:
    if given is not None and REQUEST_ID_PATTERN.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_ids):016x}"


def _is_json(media: str) -> bool:
    kind, _, params = media.partition(";")
    kind = kind.strip().lower()
    if kind != JSON_TYPE and not (kind.startswith("application/") and kind.endswith("+json")):
        return False
    charset = params.lower().replace(" ", "").partition("charset=")[2].split(";")[0].strip('"')
    return charset in ("", "utf-8", "utf8")


def _headers(request_id: str, model: Model | None = None) -> dict[str, str]:
    headers = {"content-type": JSON_TYPE, REQUEST_ID_HEADER: request_id}
    if model is not None and model.version is not None:
        headers[VERSION_HEADER] = str(model.version)
    return headers


def _error(
    status: int,
    message: str,
    field: str | None,
    request_id: str,
    extra_headers: dict[str, str] | None = None,
    *,
    model: Model | None = None,
) -> Response:
    headers = _headers(request_id, model)
    if extra_headers:
        headers.update(extra_headers)
    body = {"error": message, "field": field, "request_id": request_id}
    return Response(status, headers, _encoder.encode(body).encode())


def _method(method: Any) -> str:
    return (
        method
        if isinstance(method, str) and method.isalpha() and len(method) <= 16
        else echo(method)
    )


def _int(environ: Mapping[str, str], key: str) -> int | None:
    value = environ.get(key, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key}={value!r}: expected an integer") from None


def _float(environ: Mapping[str, str], key: str) -> float | None:
    value = environ.get(key, "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{key}={value!r}: expected a number") from None
