"""deploy/server.py on a real loopback port: the same answers as Service.handle, keep-alive,
the limits and timeouts it enforces itself, reload from the state file, the canary split,
a clean SIGTERM, and clients that go away mid-request."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import serving
from deploy.server import Server
from deploy.service import Service
from tests.conftest import CREDIT_ROW, REPO
from tests.integration.http_helpers import (
    JSON,
    Client,
    exchange,
    parse_responses,
    wait_until,
)

ROW = CREDIT_ROW
GOOD = json.dumps({"instances": [ROW, {**ROW, "age": 63}]}).encode()


@pytest.fixture(scope="module")
def versions(trained_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two installed versions of the credit model, as the local endpoint lays them out."""
    root = tmp_path_factory.mktemp("endpoint")
    for version in (1, 2):
        shutil.copytree(trained_artifact, root / f"v{version}")
    return root


def write_state(directory: Path, live: int, canary: int | None = None, weight: float = 0.0):
    """Replace the state file whole, as LocalEndpoint does."""
    state = {
        "model": "credit",
        "live": {"version": live, "path": str(directory / f"v{live}")},
        "canary": (
            {"version": canary, "path": str(directory / f"v{canary}"), "weight": weight}
            if canary
            else None
        ),
    }
    path = directory / serving.STATE_FILE
    tmp = directory / ".serving.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
    return path


@pytest.fixture
def endpoint(versions: Path, tmp_path: Path) -> Path:
    """A private endpoint directory (its own state file) over the shared installed versions."""
    directory = tmp_path / "credit"
    directory.mkdir()
    for version in (1, 2):
        (directory / f"v{version}").symlink_to(versions / f"v{version}")
    write_state(directory, 1)
    return directory


@pytest.fixture
def server(endpoint: Path) -> Iterator[Server]:
    with Server.for_state(endpoint / serving.STATE_FILE, reload_interval=0.05).start() as running:
        yield running


def health_version(server: Server) -> Any:
    with Client(server.url) as client:
        return client.request("GET", serving.HEALTH_PATH).json().get("version")


# --- the same answers as the Service ------------------------------------------------------------

REQUESTS = [
    ("POST", serving.PREDICT_PATH, JSON, GOOD),
    ("GET", serving.HEALTH_PATH, {}, b""),
    ("POST", serving.PREDICT_PATH, JSON, b'{"instances": [{"age": 1}]}'),
    ("POST", serving.PREDICT_PATH, JSON, b"{"),
    ("POST", serving.PREDICT_PATH, JSON, b'{"instances": [{"age": NaN}]}'),
    ("POST", serving.PREDICT_PATH, {"content-type": "text/csv"}, GOOD),
    ("GET", serving.PREDICT_PATH, {}, b""),
    ("PUT", serving.HEALTH_PATH, JSON, GOOD),
    ("DELETE", "/nowhere", {}, b""),
    ("POST", serving.PREDICT_PATH + "?explain=1", JSON, GOOD),
    ("POST", serving.PREDICT_PATH, {**JSON, serving.ROUTE_HEADER: "blue"}, GOOD),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), REQUESTS)
def test_answers_are_the_services(server: Server, endpoint: Path, method, path, headers, body):
    headers = {**headers, serving.REQUEST_ID_HEADER: "same-id-1"}
    expected = Service.from_state(endpoint / serving.STATE_FILE).handle(method, path, headers, body)
    with Client(server.url) as client:
        answer = client.request(method, path, body, headers)
    assert answer.status == expected.status
    assert answer.json() == json.loads(expected.body)
    for name, value in expected.headers.items():
        assert answer.headers[name] == value


def test_the_server_refuses_with_a_json_error(server: Server) -> None:
    with Client(server.url) as client:
        for status, (method, path) in [(404, ("GET", "/x")), (405, ("GET", "/predict"))]:
            answer = client.request(method, path)
            assert answer.status == status
            assert set(answer.json()) == {"error", "field", "request_id"}


def test_keep_alive_reuses_one_connection(server: Server) -> None:
    with Client(server.url) as client:
        client.request("POST", serving.PREDICT_PATH, GOOD, JSON)
        first = client.socket
        for _ in range(50):
            answer = client.request("POST", serving.PREDICT_PATH, GOOD, JSON)
            assert answer.status == 200 and answer.headers["connection"] == "keep-alive"
        assert client.socket is first
        assert server.connections == 1


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    one = (
        f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"x-request-id: r-{{}}\r\ncontent-length: {len(GOOD)}\r\n\r\n"
    )
    data = b"".join(one.format(i).encode() + GOOD for i in range(3))
    data += b"GET /health HTTP/1.1\r\nconnection: close\r\n\r\n"
    answers = parse_responses(exchange(server.port, data))
    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert [a.json()["request_id"] for a in answers[:3]] == ["r-0", "r-1", "r-2"]
    assert answers[-1].headers["connection"] == "close"


def test_http_1_0_closes_unless_asked(server: Server) -> None:
    (answer,) = parse_responses(exchange(server.port, b"GET /health HTTP/1.0\r\n\r\n"))
    assert answer.status == 200 and answer.headers["connection"] == "close"


def test_head_has_no_body(server: Server) -> None:
    data = exchange(server.port, b"HEAD /health HTTP/1.1\r\nconnection: close\r\n\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and rest == b""
    assert b"content-length: " in head


# --- what the server refuses itself -------------------------------------------------------------


def test_an_oversized_body_is_refused_before_it_is_read(endpoint: Path) -> None:
    service = Service.from_state(endpoint / serving.STATE_FILE, max_body_bytes=1000)
    with (
        Server(service).start() as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        sock.settimeout(10)
        sock.sendall(b"POST /predict HTTP/1.1\r\ncontent-length: 50000000\r\n\r\n")
        # nothing of the body is sent: the answer comes anyway
        data = b""
        while not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        (answer,) = parse_responses(data)
    assert answer.status == 413 and "50000000" in answer.json()["error"]
    assert answer.headers["connection"] == "close"


def test_expect_100_continue(server: Server) -> None:
    head = f"POST /predict HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: {len(GOOD)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(GOOD)
        sock.shutdown(socket.SHUT_WR)
        data = b"".join(iter(lambda: sock.recv(65536), b""))
    assert parse_responses(data)[0].status == 200


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /predict HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411),
        (b"POST /predict HTTP/1.1\r\ncontent-length: -1\r\n\r\n", 400),
        (b"POST /predict HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}", 400),
        (b"GET /health HTTP/2.0\r\n\r\n", 400),
        (b"GET /health\r\n\r\n", 400),
        (b"G\x00T /health HTTP/1.1\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nbad name: x\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nexpect: magic\r\n\r\n", 417),
        (b"GET /health HTTP/1.1\r\n" + b"x-a: b\r\n" * 101 + b"\r\n", 431),
        (b"GET /health HTTP/1.1\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"POST /predict HTTP/1.1\r\ncontent-length: 10\r\n\r\n{}", 400),  # ends early
    ],
)
def test_malformed_requests_get_a_4xx_and_a_close(server: Server, raw: bytes, status: int):
    (answer,) = parse_responses(exchange(server.port, raw))
    assert answer.status == status, answer.body
    assert answer.json()["error"]
    assert answer.headers["connection"] == "close"
    assert health_version(server) == 1  # and the server is fine


def test_a_slow_head_gets_408_and_a_close(endpoint: Path) -> None:
    service = Service.from_state(endpoint / serving.STATE_FILE)
    with Server(service, header_timeout=0.2).start() as server:
        data = exchange(server.port, b"GET /health HTTP/1.1\r\nx-slow: ", half_close=False)
        (answer,) = parse_responses(data)
        assert answer.status == 408 and answer.headers["connection"] == "close"
        assert health_version(server) == 1


def test_a_slow_body_gets_408(endpoint: Path) -> None:
    service = Service.from_state(endpoint / serving.STATE_FILE)
    with Server(service, body_timeout=0.2).start() as server:
        data = exchange(
            server.port, b"POST /predict HTTP/1.1\r\ncontent-length: 9\r\n\r\n{", half_close=False
        )
        assert parse_responses(data)[0].status == 408


def test_an_idle_connection_is_closed(endpoint: Path) -> None:
    service = Service.from_state(endpoint / serving.STATE_FILE)
    with Server(service, idle_timeout=0.2).start() as server:
        assert exchange(server.port, b"", half_close=False) == b""
        wait_until(lambda: server.connections == 0)


def test_clients_leaving_mid_request_do_not_hurt(server: Server) -> None:
    for partial in [
        b'POST /predict HTTP/1.1\r\ncontent-length: 1000\r\n\r\n{"instances"',
        b"POST /predict HTTP/1.1\r\ncontent-le",
        b"GET /health HTTP/1.1\r\n\r\n",  # leaves before reading its answer
    ]:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(partial)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, not a polite close
    wait_until(lambda: server.connections == 0)
    with Client(server.url) as client:
        assert client.request("POST", serving.PREDICT_PATH, GOOD, JSON).status == 200


def test_a_large_body_is_served_from_the_pool(endpoint: Path) -> None:
    service = Service.from_state(endpoint / serving.STATE_FILE)
    rows = json.dumps({"instances": [ROW] * 500}).encode()
    expected = json.loads(service.handle("POST", "/predict", {"x-request-id": "big"}, rows).body)
    with Server(service, inline_body_bytes=100).start() as server, Client(server.url) as client:
        answer = client.request("POST", "/predict", rows, {**JSON, "x-request-id": "big"})
    assert answer.status == 200 and answer.json() == expected


def test_one_access_log_line_per_request(endpoint: Path) -> None:
    stream = io.StringIO()
    service = Service.from_state(endpoint / serving.STATE_FILE)
    with Server(service, log=stream).start() as server, Client(server.url) as client:
        client.request("POST", "/predict", GOOD, {**JSON, "x-request-id": "logged-1"})
        client.request("GET", "/nowhere")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert '"POST /predict" 200' in lines[0] and lines[0].endswith("logged-1")
    assert '"GET /nowhere" 404' in lines[1]


def test_liveness_paths_answer_while_nothing_is_loaded() -> None:
    with (
        Server(Service(None), liveness_paths={"/live"}).start() as server,
        Client(server.url) as client,
    ):
        assert client.request("GET", "/live").status == 200
        assert client.request("GET", serving.HEALTH_PATH).status == 503
        assert client.request("POST", "/live").status == 405


# --- reload, canary -----------------------------------------------------------------------------


def test_a_new_state_is_served_without_a_restart(server: Server, endpoint: Path) -> None:
    assert health_version(server) == 1
    write_state(endpoint, 2)
    wait_until(lambda: health_version(server) == 2)
    with Client(server.url) as client:
        assert client.request("POST", "/predict", GOOD, JSON).json()["version"] == 2


def test_a_broken_state_keeps_the_old_models(
    server: Server, endpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="deploy.server")
    (endpoint / serving.STATE_FILE).write_text('{"model": "credit", "live": {"ver')
    wait_until(lambda: "cannot be loaded" in caplog.text)
    assert health_version(server) == 1
    assert caplog.text.count("cannot be loaded") == 1  # one warning, not one per poll
    write_state(endpoint, 2)
    wait_until(lambda: health_version(server) == 2)


def test_a_canary_splits_by_request_id_and_the_route_pins(server: Server, endpoint: Path):
    state = write_state(endpoint, 1, canary=2, weight=0.3)
    wait_until(lambda: (health_version(server), _canary(server)) == (1, 2))
    reference = Service.from_state(state)
    seen = set()
    with Client(server.url) as client:
        for i in range(60):
            headers = {**JSON, serving.REQUEST_ID_HEADER: f"split-{i}"}
            answer = client.request("POST", "/predict", GOOD, headers)
            expected = reference.handle("POST", "/predict", headers, GOOD)
            assert answer.json() == json.loads(expected.body)
            seen.add(answer.json()["version"])
        assert seen == {1, 2}
        for route, version in [("canary", 2), ("live", 1)]:
            headers = {**JSON, serving.ROUTE_HEADER: route}
            assert client.request("POST", "/predict", GOOD, headers).json()["version"] == version


def _canary(server: Server) -> Any:
    with Client(server.url) as client:
        canary = client.request("GET", serving.HEALTH_PATH).json()["canary"]
    return canary and canary["version"]


# --- the server file and shutdown ---------------------------------------------------------------


def test_the_server_file_names_a_running_server(endpoint: Path) -> None:
    path = endpoint / serving.SERVER_FILE
    with Server.for_state(endpoint / serving.STATE_FILE).start() as server:
        assert json.loads(path.read_text()) == {"url": server.url, "pid": os.getpid()}
    assert not path.exists()
    with Server.for_state(endpoint / serving.STATE_FILE).start():
        path.write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": 1}))  # a newer one
    assert path.exists()  # not removed: it names another server


def test_sigterm_finishes_cleanly(endpoint: Path) -> None:
    state = endpoint / serving.STATE_FILE
    code = f"from deploy.server import serve_state; serve_state({str(state)!r}, port=0)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        line = process.stderr.readline()
        assert line.startswith("serving credit v1 on http://127.0.0.1:"), line
        url = line.split(" on ")[1].strip()
        server_file = endpoint / serving.SERVER_FILE
        assert json.loads(server_file.read_text()) == {"url": url, "pid": process.pid}
        with Client(url) as client:
            assert client.request("POST", "/predict", GOOD, JSON).status == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        assert not server_file.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def test_connections_beyond_the_limit_are_closed(endpoint: Path) -> None:
    service = Service.from_state(endpoint / serving.STATE_FILE)
    with Server(service, max_connections=2).start() as server:
        first, second = Client(server.url), Client(server.url)
        assert first.request("GET", serving.HEALTH_PATH).status == 200
        assert second.request("GET", serving.HEALTH_PATH).status == 200
        assert exchange(server.port, b"GET /health HTTP/1.1\r\n\r\n") == b""  # a third: closed
        first.close()
        wait_until(lambda: server.connections == 1)
        assert health_version(server) == 1  # room again
        second.close()
