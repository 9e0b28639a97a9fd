"""`tandem serve` as a user runs it: a real server process on loopback that follows deploys,
canaries, promotions and rollbacks made from another process, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from contract import serving
from tests.e2e.conftest import small_spec

ROW = {"age": 41, "income": 52000.0, "debt_ratio": 0.31, "late_payments": 0, "credit_lines": 4,
       "employment": "salaried"}  # fmt: skip


def _post(url: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """What `curl -X POST URL -H 'content-type: application/json' -d BODY` does."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_for(check, what: str, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"waited {seconds:.0f} s for {what}")


@pytest.fixture
def served(cli, tmp_path):
    """v1 and v2 trained and approved, v2 live, and `tandem serve credit` running."""
    spec = small_spec(tmp_path, "synthetic://credit?rows=1200&seed=5")
    for _ in range(2):
        result = cli("pipeline", str(spec))
        assert result.exit_code == 0, result.output
    server_file = tmp_path / "home" / "dev" / "endpoint" / "credit" / serving.SERVER_FILE
    env = {**os.environ, "TANDEM_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [sys.executable, "-m", "ml", "serve", "credit", "--port", "0", "--capture", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = _wait_for(
            lambda: server_file.is_file() and json.loads(server_file.read_text())["url"],
            "the server to listen",
        )
        yield process, url, server_file
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _version(url: str, route: str | None = None) -> int:
    headers = {serving.ROUTE_HEADER: route} if route else {}
    status, answer = _post(url + serving.PREDICT_PATH, {"instances": [ROW]}, headers)
    assert status == 200, answer
    return answer["version"]


def test_serve_follows_canary_promotion_and_rollback_then_stops_on_sigterm(cli, served, tmp_path):
    process, url, server_file = served
    status, answer = _post(url + serving.PREDICT_PATH, {"instances": [ROW, ROW]})
    assert status == 200 and answer["model"] == "credit" and answer["version"] == 2
    assert len(answer["predictions"]) == 2 and len(answer["probabilities"][0]) == 2

    # a bad request is a 4xx naming the field, and the server goes on serving
    status, error = _post(url + serving.PREDICT_PATH, {"instances": [{**ROW, "age": "old"}]})
    assert status == 422 and "age" in error["error"]

    canary = cli("--json", "deploy", "credit", "1", "--canary", "0.5")
    assert canary.exit_code == 0, canary.output
    assert _version(url, route="canary") == 1 and _version(url, route="live") == 2

    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([ROW]))
    promoted = cli("--json", "deploy", "credit", "--promote-canary")
    assert promoted.exit_code == 0, promoted.output
    scored = cli("--json", "predict", "credit", str(rows))  # through the running server
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.output)["version"] == 1 and _version(url) == 1

    again = cli("--json", "deploy", "credit", "2")
    assert again.exit_code == 0, again.output
    assert _version(url) == 2
    back = cli("--json", "rollback", "credit")
    assert back.exit_code == 0, back.output
    assert _version(url) == 1

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not server_file.exists()
    # every answered request was captured and flushed at shutdown, per answering version
    captures = tmp_path / "home" / "dev" / "store" / "captures" / "credit"
    lines = [
        json.loads(line)
        for path in sorted(captures.rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert {line["version"] for line in lines} == {1, 2}
    assert sum(line["request_id"] == answer["request_id"] for line in lines) == 2
    # with no server running, predict scores in-process from the same state
    scored = cli("--json", "predict", "credit", str(rows))
    assert scored.exit_code == 0 and json.loads(scored.output)["version"] == 1


def test_serve_refuses_a_model_that_is_not_deployed(cli):
    result = cli("serve", "churn", "--port", "0")
    assert result.exit_code == 1 and "not deployed" in result.output
