"""The HTTP/1.1 server over `Service`: `tandem serve`, the demo and the serving container.

Standard library only: asyncio streams for the connections, a thread pool for large model
calls. An earlier measurement on this kind of machine found asyncio streams faster than
`http.server.ThreadingHTTPServer` and uvicorn/h11 at one and at many keep-alive clients (no
thread per connection, no ASGI layer between the socket and `Service.handle`); it was not
repeated here. bench/server.py measures this server in every run against `mlflow models serve`
(uvicorn) and against a bare asyncio protocol that answers without parsing (the floor).

What a connection gets:
- keep-alive (HTTP/1.1 by default, HTTP/1.0 when asked), pipelined requests in order,
  `TCP_NODELAY` (without it each keep-alive answer waits ~40 ms on the client's delayed ACK);
- bounded requests: the head (request line and headers) within `max_header_bytes` and
  `max_headers` (431), a body only with a Content-Length (chunked: 411), refused with 413
  before it is read when larger than the Service's limit; bodies in flight share a byte
  budget, so memory is bounded by `max_connections` heads plus `body_budget` bytes;
- timeouts: a head that does not arrive within `header_timeout` gets 408 and the connection
  closes, a body within `body_timeout` likewise; an idle keep-alive connection closes after
  `idle_timeout`; a client that goes away mid-request costs nothing but its connection;
- every answer the server makes itself is JSON in the Service's error shape, never a 5xx.

Small bodies (up to `inline_body_bytes`) are answered on the event loop, larger ones in the
`workers` pool (onnxruntime releases the GIL while it runs): a one-row request takes tens of
microseconds, less than the hop to a thread and back (bench/server.py, one client: p50 0.27 ms
inline against 0.41 ms through the pool, with the machine's load at 4-6).

Given the local stack's state file (contract.serving.STATE_FILE), the server polls its
(mtime_ns, size, inode) every `reload_interval` seconds and swaps in the new models through
`Service.swap`, loaded off the event loop; a state that cannot be loaded keeps the old models
answering and logs one warning. While it runs it keeps contract.serving.SERVER_FILE beside
the state file ({"url", "pid"}), which is how `tandem predict` finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any, NoReturn, TextIO

from contract.serving import REQUEST_ID_HEADER, SERVER_FILE
from deploy.service import Response, Service

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # request line + headers
MAX_HEADERS = 100
HEADER_TIMEOUT = 10.0  # seconds for a whole request head, once its first byte arrived
BODY_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0  # a keep-alive connection with no request
MAX_CONNECTIONS = 512  # more are closed as they arrive
BODY_BUDGET = 64 * 1024 * 1024  # bytes of request bodies held at once
SHUTDOWN_TIMEOUT = 10.0  # in-flight requests get this long to finish on close
LINGER_SECONDS = 1.0  # after a refusal, read (and drop) what the client still sends
# Bodies up to this size are answered on the event loop: for small requests the thread
# hop costs more than the model call (bench/server.py measures both).
INLINE_BODY_BYTES = 16 * 1024
# Bodies up to this size are read without taking from the byte budget (bounded by
# max_connections anyway).
SMALL_BODY_BYTES = 64 * 1024
JSON_TYPE = "application/json"
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_VERSIONS = {b"HTTP/1.1": (1, 1), b"HTTP/1.0": (1, 0)}
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count(1)


class _Refusal(Exception):
    """A request the server answers itself and then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Budget:
    """An async byte semaphore: large bodies wait for room instead of growing memory."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._cond = asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= n)
            self.free -= n

    async def give(self, n: int) -> None:
        async with self._cond:
            self.free += n
            self._cond.notify_all()


class Server:
    """`Service` over HTTP/1.1 on `host:port` (port 0: any free port). See the module doc."""

    def __init__(
        self,
        service: Service,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        workers: int = 8,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_headers: int = MAX_HEADERS,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        body_budget: int = BODY_BUDGET,
        inline_body_bytes: int = INLINE_BODY_BYTES,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        liveness_paths: Iterable[str] = frozenset(),
        state_path: str | Path | None = None,
        reload_interval: float = 0.5,
        log: TextIO | None = None,
        on_listening: Callable[[Server], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.service = service
        self.host = host
        self.port = int(port)
        self.workers = int(workers)
        self.max_header_bytes = int(max_header_bytes)
        self.max_headers = int(max_headers)
        self.header_timeout = float(header_timeout)
        self.body_timeout = float(body_timeout)
        self.idle_timeout = float(idle_timeout)
        self.max_connections = int(max_connections)
        self.body_budget = int(body_budget)
        self.inline_body_bytes = int(inline_body_bytes)
        self.shutdown_timeout = float(shutdown_timeout)
        self.liveness_paths = frozenset(liveness_paths)
        self.state_path = Path(state_path) if state_path is not None else None
        self.reload_interval = float(reload_interval)
        self.access_log = log
        self.on_listening = on_listening
        self._tasks: dict[asyncio.Task[Any], bool] = {}  # connection -> busy with a request
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._budget: _Budget | None = None
        self._signature: tuple[int, int, int] | None = None
        self._server_file: Path | None = None

    @classmethod
    def for_state(
        cls,
        state_path: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        capture: Any = None,
        **kw: Any,
    ) -> Server:
        """A server for the local stack's state file, following its changes."""
        server = cls(Service.from_state(Path(state_path), capture=capture), host, port,
                     state_path=state_path, **kw)  # fmt: skip
        server._signature = _signature(Path(state_path))
        return server

    # --- running --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"  # where a client on this machine reaches it
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._tasks)

    def start(self) -> Server:
        """Serve on a background thread; return once listening (or raise why not)."""
        if self._thread is not None:
            raise RuntimeError("the server was started already")
        self._thread = threading.Thread(target=self._run_thread, name="tandem-server",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run_thread(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def serve_forever(self) -> None:
        """Serve in this (the main) thread until SIGTERM or SIGINT, then shut down cleanly."""
        asyncio.run(self._serve(handle_signals=True))

    def close(self) -> None:
        """Stop accepting, let in-flight requests finish, flush the capture (idempotent)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has finished already
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.shutdown_timeout + 5.0)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _serve(self, handle_signals: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._stop = loop, asyncio.Event()
        self._budget = _Budget(max(self.body_budget, self.service.max_body_bytes))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tandem-worker")
        listener = await asyncio.start_server(
            self._connection, self.host, self.port, limit=self.max_header_bytes, backlog=1024
        )
        reloader = None
        try:
            self.port = listener.sockets[0].getsockname()[1]
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(signum, self._stop.set)
            if self.state_path is not None:
                self._write_server_file()
                reloader = loop.create_task(self._reload_loop())
            self._ready.set()
            if self.on_listening is not None:
                self.on_listening(self)
            await self._stop.wait()
        finally:
            await self._shutdown(listener, reloader)

    async def _shutdown(self, listener: asyncio.Server, reloader: asyncio.Task | None) -> None:
        self._stopping = True
        listener.close()  # no new connections
        if reloader is not None:
            reloader.cancel()
        for task, busy in list(self._tasks.items()):
            if not busy:
                task.cancel()  # waiting for a request that will not be served
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        assert self._pool is not None
        self._pool.shutdown(wait=True)
        flush = getattr(self.service.capture, "flush", None)
        if callable(flush):
            await asyncio.to_thread(flush)
        self._remove_server_file()

    # --- the server file ------------------------------------------------------------------

    def _write_server_file(self) -> None:
        assert self.state_path is not None
        path = self.state_path.parent / SERVER_FILE
        data = json.dumps({"url": self.url, "pid": os.getpid()}).encode()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._server_file = path

    def _remove_server_file(self) -> None:
        path = self._server_file
        if path is None:
            return
        with contextlib.suppress(OSError, ValueError):
            named = json.loads(path.read_text())
            if named == {"url": self.url, "pid": os.getpid()}:  # not a newer server's
                path.unlink()

    # --- reload ---------------------------------------------------------------------------

    async def _reload_loop(self) -> None:
        assert self.state_path is not None
        while True:
            await asyncio.sleep(self.reload_interval)
            signature = _signature(self.state_path)
            if signature == self._signature:
                continue
            self._signature = signature
            if signature is None:
                log.warning("%s is gone; still serving what was loaded", self.state_path)
                continue
            try:
                fresh = await asyncio.to_thread(Service.from_state, self.state_path)
            except Exception as exc:  # a half-deployed or broken state: keep what works
                log.warning(
                    "%s changed but cannot be loaded (%s: %s); still serving %s",
                    self.state_path, type(exc).__name__, str(exc)[:200], self.describe(),
                )  # fmt: skip
                continue
            routing = fresh.routing
            self.service.swap(routing.live, routing.canary, routing.canary_weight)
            log.info("reloaded %s: now serving %s", self.state_path, self.describe())

    def describe(self) -> str:
        """What answers, e.g. "credit v3 (canary v4 at 10%)"."""
        routing = self.service.routing
        if routing.live is None:
            return "no model"
        text = routing.live.name + _version(routing.live.version)
        if routing.canary is not None:
            text += f" (canary{_version(routing.canary.version)} at {routing.canary_weight:.0%})"
        return text

    # --- connections ----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        if self._stopping or len(self._tasks) >= self.max_connections:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks[task] = False
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        peer = peer[0] if isinstance(peer, tuple) else "-"
        try:
            while not self._stopping and await self._exchange(reader, writer, task, peer):
                pass
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        except asyncio.CancelledError:
            # shutting down: end normally (asyncio's stream callback reads the task's
            # exception, and a cancelled task would make it log a traceback)
            if not self._stopping:
                raise
        finally:
            self._tasks.pop(task, None)
            writer.close()

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        task: asyncio.Task[Any],
        peer: str,
    ) -> bool:
        """Read one request, answer it; whether the connection stays open."""
        self._tasks[task] = False
        try:
            async with asyncio.timeout(self.idle_timeout):
                first = await reader.read(1)
        except TimeoutError:
            return False
        if not first:
            return False  # closed between requests
        self._tasks[task] = True
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(self.header_timeout):
                    head = first + await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                raise _Refusal(408, f"the request head did not arrive within "
                                    f"{self.header_timeout:g} s") from None  # fmt: skip
            except asyncio.LimitOverrunError:
                raise _Refusal(431, f"the request head is larger than "
                                    f"{self.max_header_bytes} bytes") from None  # fmt: skip
            except asyncio.IncompleteReadError:
                return False  # gone mid-head
            head = head.lstrip(b"\r\n")
            if not head:
                return True  # empty lines between requests are allowed
            method, target, version, headers = self._parse_head(head)
            keep_alive = _keep_alive(version, headers.get("connection", ""))
            length = self._content_length(headers)
            expect = headers.get("expect")
            if expect is not None:
                if expect.lower() != "100-continue":
                    raise _Refusal(417, "the only expectation served is 100-continue")
                if version == (1, 1):
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await self._read_body(reader, writer, length) if length else b""
            if body is None:
                return False
            response = await self._answer(method, target, headers, body)
        except _Refusal as refusal:
            response = _error_response(refusal.status, refusal.message)
            self._log(peer, "-", "-", response, started)
            await self._refuse(reader, writer, response)
            return False
        keep_alive = keep_alive and not self._stopping
        writer.write(_encode(response, keep_alive, method == "HEAD"))
        await writer.drain()
        self._log(peer, method, target, response, started)
        return keep_alive

    def _parse_head(self, head: bytes) -> tuple[str, str, tuple[int, int], dict[str, str]]:
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise _Refusal(400, "the request line is not METHOD TARGET HTTP/1.1")
        method, target, version = parts
        if not _TOKEN.issuperset(method) or len(method) > 32:
            raise _Refusal(400, "the method is not a token")
        if version not in _VERSIONS:
            raise _Refusal(400, "unsupported HTTP version; this server speaks HTTP/1.1 and 1.0")
        if any(b <= 0x20 or b == 0x7F for b in target):
            raise _Refusal(400, "the request target holds a control character or a space")
        if len(lines) - 1 > self.max_headers:
            raise _Refusal(431, f"more than {self.max_headers} header fields")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or not _TOKEN.issuperset(name):
                raise _Refusal(400, "a header line is not NAME: VALUE")
            key = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            if key == "content-length" and key in headers and headers[key] != text:
                raise _Refusal(400, "conflicting Content-Length headers")
            headers[key] = text
        return method.decode("ascii"), target.decode("latin-1"), _VERSIONS[version], headers

    def _content_length(self, headers: dict[str, str]) -> int:
        if "transfer-encoding" in headers:
            raise _Refusal(411, "send the body with a Content-Length; chunked or other "
                                "transfer codings are not accepted")  # fmt: skip
        raw = headers.get("content-length")
        if raw is None:
            return 0
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise _Refusal(400, "Content-Length is not a number of bytes")
        length = int(raw)
        limit = self.service.max_body_bytes
        if length > limit:
            raise _Refusal(413, f"the body is {length} bytes, more than the {limit} allowed")
        return length

    async def _read_body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int
    ) -> bytes | None:
        budget = self._budget if length > SMALL_BODY_BYTES else None
        if budget is not None:
            await budget.take(length)
        try:
            async with asyncio.timeout(self.body_timeout):
                return await reader.readexactly(length)
        except TimeoutError:
            raise _Refusal(408, f"the body did not arrive within {self.body_timeout:g} s") from None
        except asyncio.IncompleteReadError as exc:
            if not writer.is_closing():  # half-closed: it may still read the answer
                with contextlib.suppress(ConnectionError, OSError):
                    writer.write(_encode(_error_response(
                        400, f"the body ended after {len(exc.partial)} of {length} bytes"
                    ), False))  # fmt: skip
                    await writer.drain()
            return None
        finally:
            if budget is not None:
                await budget.give(length)

    async def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Response:
        path = target
        if not path.startswith("/"):  # absolute-form: http://host/path
            scheme, sep, rest = path.partition("://")
            path = "/" + rest.partition("/")[2] if sep and scheme.isalpha() else path
        if path.partition("?")[0] in self.liveness_paths:
            if method not in ("GET", "HEAD"):
                return _error_response(405, f"{method} is not allowed here; use GET",
                                       {"allow": "GET, HEAD"})  # fmt: skip
            return _json_response(200, {"status": "alive"})
        if len(body) <= self.inline_body_bytes:
            return self.service.handle(method, path, headers, body)
        assert self._loop is not None and self._pool is not None
        return await self._loop.run_in_executor(
            self._pool, self.service.handle, method, path, headers, body
        )

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response: Response
    ) -> None:
        """Answer, stop sending, and drop what the client still sends for a moment, so the
        answer is not lost to a reset while it is still writing its request."""
        writer.write(_encode(response, False))
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        deadline = time.monotonic() + LINGER_SECONDS
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            while (left := deadline - time.monotonic()) > 0:
                async with asyncio.timeout(left):
                    if not await reader.read(65536):
                        break

    def _log(self, peer: str, method: str, target: str, response: Response, started: float):
        if self.access_log is None:
            return
        ms = (time.perf_counter() - started) * 1000
        request_id = response.headers.get(REQUEST_ID_HEADER, "-")
        line = (f'{peer} "{method} {target[:200]}" {response.status} {len(response.body)} '
                f"{ms:.2f}ms {request_id}\n")  # fmt: skip
        with contextlib.suppress(Exception):  # a broken log stream never fails a request
            self.access_log.write(line)
            self.access_log.flush()


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def _version(version: int | None) -> str:
    return "" if version is None else f" v{version}"


def _keep_alive(version: tuple[int, int], connection: str) -> bool:
    tokens = {t.strip().lower() for t in connection.split(",")}
    if version == (1, 1):
        return "close" not in tokens
    return "keep-alive" in tokens


def _encode(response: Response, keep_alive: bool, head_only: bool = False) -> bytes:
    status = response.status
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines.extend(f"{name}: {value}" for name, value in response.headers.items())
    lines.append(f"content-length: {len(response.body)}")
    lines.append("connection: keep-alive" if keep_alive else "connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
    request_id = f"{_ID_PREFIX}{next(_ids):016x}"
    body = {**body, "request_id": request_id}
    all_headers = {"content-type": JSON_TYPE, REQUEST_ID_HEADER: request_id, **(headers or {})}
    return Response(status, all_headers, json.dumps(body, separators=(",", ":")).encode())


def _error_response(status: int, message: str, headers: dict[str, str] | None = None):
    """The Service's error shape, for what the server refuses before the Service sees it."""
    return _json_response(status, {"error": message, "field": None}, headers)


def serve_state(
    state_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 8,
    *,
    capture: Any = None,
) -> NoReturn:
    """`tandem serve`: serve the local stack's state file until SIGTERM/SIGINT; exit 0."""
    try:
        server = Server.for_state(state_path, host, port, workers=workers, capture=capture)
    except Exception as exc:  # a state that cannot be loaded: say why, no traceback
        print(f"tandem serve: cannot load {state_path}: {exc}", file=sys.stderr)
        sys.exit(1)

    def listening(server: Server) -> None:
        print(f"serving {server.describe()} on {server.url}", file=sys.stderr, flush=True)

    server.on_listening = listening
    try:
        server.serve_forever()
    except OSError as exc:  # the port is taken, the address is not ours
        print(f"tandem serve: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
