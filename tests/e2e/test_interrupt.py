"""Stopping `tandem pipeline` stops its training job and leaves nothing behind.

A real CLI process trains on the local stack; the test finds its training child through
/proc, stops the CLI, and checks the child is gone and no job directory is left. Waits are
bounded polls, never timing assertions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_spec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds processes through /proc"),
]

# big enough that training is still running when the test stops it
SLOW = {"kind": "gradient_boosting", "params": {"n_estimators": 400, "max_depth": 4}}
SLOW_DATA = {"source": "synthetic://credit?rows=40000&seed=3"}


def _children_training(job_root: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ml.train" in cmdline and any(str(job_root).encode() in arg for arg in cmdline):
            pids.append(int(entry.name))
    return pids


def _wait_for(condition, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    home = tmp_path / "home"
    spec = write_spec(tmp_path, estimator=SLOW, dataset=SLOW_DATA)
    env = {**os.environ, "TANDEM_HOME": str(home), "TANDEM_CODE_VERSION": "test"}
    cli = subprocess.Popen(
        [sys.executable, "-m", "ml.cli", "pipeline", str(spec), "--reports", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    jobs = home / "dev" / "jobs"
    assert _wait_for(lambda: bool(_children_training(jobs))), "training never started"
    return cli, jobs


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_pipeline_stops_its_job_and_cleans_up(tmp_path: Path, how: int) -> None:
    cli, jobs = _start(tmp_path)
    children = _children_training(jobs)
    cli.send_signal(how)
    _, stderr = cli.communicate(timeout=60)
    assert cli.returncode == 128 + how, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]
    assert f"interrupted by {signal.Signals(how).name}".encode() in stderr  # says why it stopped
    assert _wait_for(lambda: not any(_running(p) for p in children), 30), "the job outlived it"
    assert not list(jobs.glob("job-*")), "a job directory was left behind"


def test_a_killed_pipeline_takes_its_job_with_it_and_the_next_run_sweeps(tmp_path: Path) -> None:
    cli, jobs = _start(tmp_path)
    children = _children_training(jobs)
    cli.kill()  # SIGKILL: no handler runs in the parent
    cli.communicate(timeout=60)
    assert _wait_for(lambda: not any(_running(p) for p in children), 30), "the job outlived it"
    left = list(jobs.glob("job-*"))
    assert left, "expected the dead parent's job directory (nothing could clean it)"

    from ml.clouds import connect
    from ml.clouds.local import SubprocessJobRunner, stack_outputs

    stack = connect("local", stack_outputs("dev", tmp_path / "home"))
    assert isinstance(stack.jobs, SubprocessJobRunner)
    stack.jobs._sweep()  # what every run_training does first
    assert not any(path.exists() for path in left)
