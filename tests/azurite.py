"""Azurite, the Azure Blob Storage emulator (npm `azurite`, pinned in package.json), run by the
test suite itself: on 127.0.0.1 and a free port, in memory, telemetry off, stopped after.

`running()` starts one and yields its blob endpoint for the `endpoint_url` stack output
(`http://127.0.0.1:<port>/devstoreaccount1`); the `azurite` fixture (tests/conftest.py)
shares one per test session and worker. Azurite has no blob versioning, soft delete or
immutability (501): those are checked on the Pulumi program, not here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXECUTABLE = REPO / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
STARTUP_LIMIT_S = 60  # a ceiling for a loaded machine, not a timing assertion


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running(workspace: Path) -> Iterator[str]:
    """An Azurite blob service for the duration of the block; its blob endpoint URL."""
    if not EXECUTABLE.exists() or shutil.which("node") is None:
        raise RuntimeError(
            f"Azurite is not installed ({EXECUTABLE}): run `npm install` in the project root "
            "(`make test` does), with Node.js 18+"
        )
    port = _free_port()
    command = [
        str(EXECUTABLE),
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--silent",
    ]  # fmt: skip
    log = (workspace / "azurite.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workspace)
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while not _listening(port):
            if process.poll() is not None:
                raise RuntimeError(
                    f"Azurite exited with {process.returncode}: "
                    f"{(workspace / 'azurite.log').read_text(errors='replace')[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"Azurite did not listen on port {port} within the limit")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/{ACCOUNT}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
