"""A real MLflow tracking server on loopback for the tests: SQLite backend, local artifacts.

`mlflow_server` (module scope) starts `mlflow server` in its own process group, waits for
/health and always stops that group (by the PID it started), also when a test fails.
`rest_calls(url)` reads the REST calls the server has answered from its access log.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_LOGS: dict[str, Path] = {}  # server URL -> its log (uvicorn's access lines)
_ACCESS = re.compile(r'"([A-Z]+) (/api/[^ ?]*)[^"]* HTTP/[0-9.]+"')
START_SECONDS = 90.0  # a cold start imports MLflow's server app; slow on a loaded machine


def rest_calls(url: str, since: int = 0) -> tuple[list[tuple[str, str]], int]:
    """(method, path) of each REST call the server at `url` answered after byte `since` of
    its log, and the log's size now (the `since` of a later read)."""
    text = SERVER_LOGS[url].read_bytes()
    return _ACCESS.findall(text[since:].decode(errors="replace")), len(text)


def free_port() -> int:
    """A port nothing listens on (also what an unreachable tracking server looks like)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # the group this fixture started: server + workers
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a fresh MLflow server (skips when mlflow is not installed)."""
    pytest.importorskip("mlflow")
    root: Path = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        command,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # each access line as it happens
    )
    url = f"http://127.0.0.1:{port}"
    SERVER_LOGS[url] = root / "server.log"
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (root / "server.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"mlflow server did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.25)
        yield url
    finally:
        _stop(process)
        log.close()
