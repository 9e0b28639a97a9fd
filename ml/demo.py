"""`tandem demo`: the whole lifecycle on fresh local stacks, narrated.

champion trained and deployed → a retrain passes and goes live → a worse challenger is
stopped by its gates → rollback → promotion dev → staging → the local server serves what is
live, and `tandem predict` scores applicants through it over HTTP, as a client would.

Every step checks that it behaved as the story says; one that did not raises DemoStepError
(a TandemError: the CLI prints it as one line and exits 1) saying what happened and why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deploy.server import Server
from ml import lifecycle, report
from ml.clouds import connect
from ml.clouds.local import stack_outputs
from ml.errors import GateFailedError, TandemError
from ml.spec import load_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODEL = "credit"
# the three specs the story trains, in order: (title, file, whether its gates should pass)
STEPS = (
    ("train the champion", "credit.toml", True),
    ("retrain with more boosting steps", "credit_retrain.toml", True),
    ("a worse challenger", "credit_weak.toml", False),
)
APPLICANTS = [
    {"age": 34, "income": 52000.0, "debt_ratio": 0.21, "late_payments": 0, "credit_lines": 4,
     "employment": "salaried"},
    {"age": 51, "income": 23000.0, "debt_ratio": 0.62, "late_payments": 3, "credit_lines": 9,
     "employment": "unemployed"},
    {"age": 27, "income": None, "debt_ratio": 0.35, "late_payments": 1, "credit_lines": 2,
     "employment": "self_employed"},
]  # fmt: skip


class DemoStepError(TandemError):
    """A demo step did not behave as the story expects (e.g. the champion failed its gates)."""


def predict_over_http(rows_file: Path) -> dict[str, Any]:
    """`tandem predict` as a user runs it: a new process, the stack's endpoint, HTTP (the
    endpoint finds the running server through its server file)."""
    command = [sys.executable, "-m", "ml", "--stack", "demo-dev", "--json", "predict", MODEL]
    done = subprocess.run(
        [*command, str(rows_file)], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise DemoStepError(f"tandem predict failed: {(done.stderr or done.stdout).strip()}")
    return json.loads(done.stdout)


def _fresh_stack(name: str):
    outputs = stack_outputs(name)
    shutil.rmtree(outputs["root"], ignore_errors=True)  # the demo always starts from nothing
    return connect("local", stack_outputs(name))


def run_demo(
    console: Console,
    reports: Path,
    *,
    quiet: bool,
    emit: Callable[..., None],
    examples: Path = EXAMPLES,
) -> dict[str, Any]:
    started = time.perf_counter()
    say = (lambda *a, **k: None) if quiet else console.print
    dev, staging = _fresh_stack("demo-dev"), _fresh_stack("demo-staging")
    steps: list[dict[str, Any]] = []

    def run(title: str, spec_file: str, expect_pass: bool):
        say(f"[bold]▶ {escape(title)}[/]  ({escape(spec_file)})")
        spec = load_spec(Path(examples) / spec_file)
        try:
            with console.status(title) if not quiet else nullcontext():
                result = lifecycle.pipeline(dev, spec)
        except GateFailedError as exc:
            result = exc.result
        path = report.publish(dev, result, reports)
        verdict = result.report.verdict
        steps.append(
            {
                "step": title,
                "version": result.version.version,
                "status": result.version.status,
                "roc_auc": round(result.outcome.card["metrics"]["roc_auc"], 4),
                "gate": "passed" if verdict.passed else "failed: " + "; ".join(verdict.reasons),
                "report": str(path),
            }
        )
        mark = "[green]passed[/]" if verdict.passed else "[red]blocked[/]"
        say(
            f"  v{result.version.version} {result.version.status}, gate {mark}; "
            f"report {escape(str(path))}"
        )
        for reason in verdict.reasons:
            say(f"    [red]✗[/] {escape(reason)}")
        if verdict.passed != expect_pass:
            happened = (
                "its gates passed"
                if verdict.passed
                else "its gates failed: " + "; ".join(verdict.reasons)
            )
            expected = "pass" if expect_pass else "be blocked"
            raise DemoStepError(
                f"demo step {title!r} ({spec_file}) should {expected}, but {happened} "
                f"(v{result.version.version} {result.version.status}; report {path})"
            )
        return result

    for title, spec_file, expect_pass in STEPS:
        run(title, spec_file, expect_pass)
    live = dev.endpoint.current(MODEL)
    if live is None:
        raise DemoStepError(f"after the pipelines nothing is live for {MODEL!r} on demo-dev")
    say(f"  champion still live: v{live.version}")

    back = lifecycle.rollback(dev, MODEL, "demo: roll back the retrain")
    say(f"[bold]▶ rollback[/]  live is v{back.version} again; v{live.version} archived")
    promoted = lifecycle.promote(dev, staging, MODEL, approve_in_target=True)
    say(
        f"[bold]▶ promote[/]  dev v{back.version} → staging v{promoted.version} "
        f"({promoted.status}), "
        f"lineage {escape(promoted.tags['promoted_from'])}"
    )

    with Server.for_state(dev.endpoint.state_path(MODEL)).start() as server:
        say(f"[bold]▶ serve[/]  tandem serve {MODEL}: what is live answers at {server.url}")
        applicants = Path(reports) / "applicants.json"
        applicants.parent.mkdir(parents=True, exist_ok=True)
        applicants.write_text(json.dumps(APPLICANTS, indent=2) + "\n")
        scored = predict_over_http(applicants)
    if scored.get("version") != back.version:
        raise DemoStepError(
            f"the endpoint answered with v{scored.get('version')}, but v{back.version} should "
            "be live after the rollback"
        )
    shares = [p[scored["classes"].index(1)] for p in scored["probabilities"]]
    say(
        f"[bold]▶ predict[/]  tandem --stack demo-dev predict {MODEL} {escape(str(applicants))}: "
        f"{len(shares)} applicants scored over HTTP by live v{scored['version']}, "
        "p(default) " + ", ".join(f"{p:.3f}" for p in shares)
    )

    elapsed = time.perf_counter() - started
    table = Table(title=f"Tandem demo: credit model on the local stack ({elapsed:.1f} s)")
    for column in ("step", "version", "status", "roc_auc", "gate"):
        table.add_column(column)
    for step in steps:
        gate = (
            step["gate"]
            if step["gate"] == "passed"
            else f"blocked ({step['gate'].count(';') + 1} checks)"
        )
        table.add_row(
            escape(step["step"]), str(step["version"]), step["status"], str(step["roc_auc"]),
            escape(gate),
        )  # fmt: skip
    table.caption = (
        f"live: v{back.version} · staging: v{promoted.version} · "
        f"reports in {escape(str(reports))}/{MODEL}/"
    )
    result = {
        "model": MODEL,
        "live_version": back.version,
        "staging_version": promoted.version,
        "steps": steps,
        "prediction": scored,
        "seconds": round(elapsed, 2),
    }
    emit(result, table)
    return result
