"""A loopback stand-in for the Azure Functions host, running a real Python v2 `function_app.py`.

Azure Functions has no emulator these tests can run (Core Tools needs the .NET host), so this is
the HTTP boundary: a real HTTP server on 127.0.0.1 in front of the real module.

What it emulates, and a test may rely on:
- Indexing: the app file is imported as a fresh module with its directory first on `sys.path`,
  its `app` (`azure.functions.FunctionApp`) is asked for its functions (`get_functions()`), and
  the HTTP-triggered one is served.
- Routing: host.json's `extensions.http.routePrefix` ("api" when absent) and the trigger's
  route template: literal segments (case-insensitive), `{name}`, `{name?}`, `{*name}`. A
  trigger with a method list takes only those methods; without one, every method. A request
  that matches no route, or comes with a method outside the list, is the host's 404 with an
  empty body.
- Keys: auth level FUNCTION or ADMIN wants the key in the `x-functions-key` header or the
  `code` query parameter; without it, or with another, the host answers 401 with an empty body
  and the function never runs. ANONYMOUS wants none.
- The request reaches the function as the worker builds it: azure-functions'
  `HttpRequestConverter` decodes the host's http datum (method, the full URL, headers, query,
  route parameters, the body as bytes); the return value goes back through
  `HttpResponseConverter` (its rule: the mimetype becomes the content-type only when the
  function sets no content-type header). A function that raises is a 500 with an empty body.
- Context: a parameter named `context` or annotated `func.Context` gets one with a fresh
  invocation id (a uuid4) per request, the function's name and directory.
- App settings: `settings()` is read on every request. When it differs from what the running
  worker started with, the worker restarts, as the host restarts it on a settings change: the
  settings the last worker set in the process environment are put back, the new ones set, and
  the module is indexed again, so its state (a loaded model) starts over. The environment is
  put back when the last host stops.
- Logs: every record that reaches the root logger at INFO or above while the host runs is
  kept in `records` (the worker forwards the root logger's records to the host).

What the real host does and this does not (no test may rely on its absence):
- functionTimeout, the 230-second HTTP idle limit, the host's request size limit, HTTPS,
  HTTP/2 and the front end's own headers;
- host keys, the master key, system keys, key rotation, the admin API, Easy Auth, CORS;
- a worker process of its own: modules the app imports (`deploy.*`) stay imported across
  restarts, a replaced worker's threads are not stopped (its capture writer finishes on its
  own), and one process environment is shared with the test;
- scale-out, per-instance concurrency, placeholders and cold starts; requests run on the
  loopback server's threads, not the worker's thread pool;
- Application Insights: records are kept, not sent; host.json's logLevel and sampling are not
  applied; the `Function.<name>.User` category is not assigned;
- the platform's environment (WEBSITE_*, IDENTITY_ENDPOINT for managed identity);
- route constraints (`{id:int}`) are matched as plain parameters.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import itertools
import json
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions import meta
from azure.functions.http import HttpRequestConverter, HttpResponseConverter

KEY_HEADER = "x-functions-key"
# Tandem's own function app, which the tests run behind this host
FUNCTION_APP = Path(__file__).resolve().parents[1] / "deploy/azure_functions/function_app.py"
KEY_PARAM = "code"
DEFAULT_ROUTE_PREFIX = "api"
_KEYED = {"function", "admin"}
_modules = itertools.count(1)
# One process environment for every host running (one per function app): a worker starts
# with its own app's settings in it and never another app's (the settings a worker set
# before are put back first), restarts are serialised across hosts, and what the test itself
# sets in the environment is left alone.
_hosts = threading.Lock()
_running = 0
_replaced: dict[str, str | None] = {}  # setting -> the environment's value before it


class _Context(func.Context):
    """One invocation's context, as the worker passes it."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._local = threading.local()
        self._local.invocation_id = self._invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


class _Worker:
    """One indexed module: the HTTP function, its route and its auth level."""

    def __init__(self, app_path: Path, route_prefix: str) -> None:
        name = f"function_app_{next(_modules)}"
        spec = importlib.util.spec_from_file_location(name, app_path)
        assert spec is not None and spec.loader is not None, app_path
        self.module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)
        app = self.module.app
        http = [f for f in app.get_functions() if f.is_http_function()]
        if len(http) != 1:
            raise RuntimeError(f"{app_path}: expected one HTTP function, found {len(http)}")
        function = http[0]
        trigger = function.get_trigger()
        self.name = function.get_function_name()
        self.directory = str(app_path.parent)
        self.call = function.get_user_function()
        self.trigger_arg = trigger.name
        level = trigger.auth_level if trigger.auth_level is not None else app.auth_level
        self.keyed = str(getattr(level, "value", level)).lower() in _KEYED
        self.methods = {str(getattr(m, "value", m)).upper() for m in trigger.methods or ()}
        self.route = _route_pattern(route_prefix, trigger.route or self.name)
        self.context_arg = _context_parameter(self.call)

    def invoke(self, request: func.HttpRequest) -> func.HttpResponse:
        kwargs: dict[str, Any] = {self.trigger_arg: request}
        if self.context_arg:
            kwargs[self.context_arg] = _Context(self.name, self.directory)
        return self.call(**kwargs)


def _context_parameter(call: Callable[..., Any]) -> str | None:
    for name, parameter in inspect.signature(call).parameters.items():
        annotation = parameter.annotation
        if name == "context" or annotation is func.Context or annotation == "func.Context":
            return name
    return None


def _route_pattern(prefix: str, template: str) -> re.Pattern[str]:
    """A regex for '/<prefix>/<template>' with the template's parameters as named groups."""
    parts = [p for p in prefix.strip("/").split("/") if p]
    pattern = "".join("/" + re.escape(p) for p in parts)
    for segment in [s for s in template.strip("/").split("/") if s]:
        match = re.fullmatch(r"\{(\*?)([A-Za-z_]\w*)(?::[^}?]*)?(\??)\}", segment)
        if match is None:
            pattern += "/" + re.escape(segment)
        elif match[1]:  # {*rest}: everything that follows, even nothing
            pattern += f"(?:/(?P<{match[2]}>.*))?"
        elif match[3]:  # {name?}
            pattern += f"(?:/(?P<{match[2]}>[^/]+))?"
        else:
            pattern += f"/(?P<{match[2]}>[^/]+)"
    return re.compile(pattern + "/?", re.IGNORECASE)


def _route_prefix(host_json: Path) -> str:
    if not host_json.is_file():
        return DEFAULT_ROUTE_PREFIX
    config = json.loads(host_json.read_text())
    http = (config.get("extensions") or {}).get("http") or {}
    return http.get("routePrefix", DEFAULT_ROUTE_PREFIX)


class _Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.INFO)
        self.kept = records

    def emit(self, record: logging.LogRecord) -> None:
        self.kept.append(record)


def _restore_environment() -> None:
    for name, value in _replaced.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _replaced.clear()


def _apply_settings(settings: Mapping[str, str]) -> None:
    _restore_environment()
    for name, value in settings.items():
        _replaced[name] = os.environ.get(name)
        os.environ[name] = value


class FunctionHost:
    """The host in front of `app_path` on 127.0.0.1 (see the module doc), as a context manager:
    `url` is where it listens, `key` the function key it wants, `records` the log records,
    `workers_started` how many workers it has started (a settings change starts one)."""

    KEY_HEADER = KEY_HEADER
    KEY_PARAM = KEY_PARAM

    def __init__(
        self,
        app_path: str | os.PathLike[str],
        key: str,
        settings: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self.app_path = Path(app_path).resolve()
        self.key = key
        self.settings = settings
        self.records: list[logging.LogRecord] = []
        self.workers_started = 0
        self._route_prefix = _route_prefix(self.app_path.parent / "host.json")
        self._worker: _Worker | None = None
        self._started_with: dict[str, str] | None = None
        self._handler = _Keep(self.records)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the host is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FunctionHost:
        global _running
        with _hosts:
            _running += 1
        sys.path.insert(0, str(self.app_path.parent))
        logging.getLogger().addHandler(self._handler)
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, data = host._answer(self.command, self.path, self.headers, body)
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

            def log_message(self, *args: Any) -> None:  # the test's output stays quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        logging.getLogger().removeHandler(self._handler)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(self.app_path.parent))
        global _running
        with _hosts:
            _running -= 1
            if _running == 0:
                _restore_environment()
        self._worker = None

    # --- the host's work ----------------------------------------------------------------------

    def worker(self) -> _Worker:
        """The worker for the current settings: the running one, or a restarted one."""
        settings = {str(k): str(v) for k, v in self.settings().items()}
        with _hosts:
            if self._worker is None or settings != self._started_with:
                _apply_settings(settings)
                self._worker = None
                self._started_with = settings
                self._worker = _Worker(self.app_path, self._route_prefix)
                self.workers_started += 1
            return self._worker

    def _answer(
        self, method: str, target: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        worker = self.worker()
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        route = worker.route.fullmatch(parts.path)
        if route is None or (worker.methods and method.upper() not in worker.methods):
            return 404, [], b""
        if worker.keyed and self.key not in (headers.get(KEY_HEADER), query.get(KEY_PARAM)):
            return 401, [], b""
        datum = meta.Datum(
            type="http",
            value={
                "method": meta.Datum(method, "string"),
                "url": meta.Datum(f"{self.url}{target}", "string"),
                "headers": {k: meta.Datum(v, "string") for k, v in headers.items()},
                "query": {k: meta.Datum(v, "string") for k, v in query.items()},
                "params": {k: meta.Datum(v, "string") for k, v in route.groupdict().items() if v},
                "body": meta.Datum(body, "bytes"),
            },
        )
        request = HttpRequestConverter.decode(datum, trigger_metadata=None)
        try:
            returned = worker.invoke(request)
        except Exception:
            logging.getLogger("azure_functions_host").exception("the function raised")
            return 500, [], b""
        out = HttpResponseConverter.encode(returned, expected_type=None).value
        status = int(out["status_code"].value)
        sent = [(name, value.value) for name, value in out["headers"].items()]
        return status, sent, out["body"].value or b""
