"""`tandem demo`: the whole lifecycle on fresh local stacks, narrated.

champion trained and deployed → a retrain passes and goes live → a worse challenger is
stopped by its gates → rollback → promotion dev → staging → predictions from what is live,
scored through the endpoint as a client would.

Every step checks that it behaved as the story says; one that did not raises DemoStepError
(a TandemError: the CLI prints it as one line and exits 1) saying what happened and why.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

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

    scored = dev.endpoint.invoke(MODEL, APPLICANTS)
    predictions = scored["predictions"]
    if scored["version"] != back.version:
        raise DemoStepError(
            f"the endpoint answered with v{scored['version']}, but v{back.version} should be "
            "live after the rollback"
        )
    say(
        f"[bold]▶ predict[/]  {len(predictions)} applicants scored by live v{scored['version']} "
        "through the endpoint: " + ", ".join(f"{p['probability']:.3f}" for p in predictions)
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
        "predictions": predictions,
        "seconds": round(elapsed, 2),
    }
    emit(result, table)
    return result
