"""`tandem pipeline` stopped by SIGINT or SIGTERM: a message, exit 128 + signal, and the
lifecycle's `finally` blocks run (the job's working directory is gone, its child stopped)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import small_spec

REPO = Path(__file__).resolve().parents[2]


def training_children(marker: str) -> list[int]:
    """Processes whose command line names `marker` (the job's working directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue  # the process ended while we looked
    return found


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_pipeline_exits_cleanly(tmp_path, signum, code):
    home = tmp_path / "home"
    # big enough that training is still running when the signal arrives
    spec = small_spec(tmp_path, "synthetic://credit?rows=60000&seed=3")
    env = {**os.environ, "TANDEM_HOME": str(home), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "ml.cli", "pipeline", str(spec)]
    cli = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    jobs = home / "dev" / "jobs"
    try:
        deadline = time.monotonic() + 120  # a bound on waiting, not an assertion on speed
        while not (jobs.is_dir() and any(jobs.iterdir())):
            assert cli.poll() is None, cli.communicate()
            assert time.monotonic() < deadline, "the training job never started"
            time.sleep(0.05)
        job_dir = next(jobs.iterdir())
        while not training_children(str(job_dir)):  # the training child is running
            assert cli.poll() is None, cli.communicate()
            assert time.monotonic() < deadline, "the training child never started"
            time.sleep(0.05)
        cli.send_signal(signum)
        stdout, stderr = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == code, stderr
    name = signal.Signals(signum).name
    assert f"interrupted by {name}" in stderr and "Traceback" not in stderr + stdout
    assert not job_dir.exists()  # the runner's finally removed the job's working directory
    assert training_children(str(job_dir)) == []
