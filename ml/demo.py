"""`tandem demo`: the whole lifecycle on fresh local stacks, narrated.

champion trained and deployed → a retrain passes and goes live → a worse challenger is
stopped by its gates → rollback → promotion dev → staging → predictions from what is live.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ml import lifecycle
from ml.clouds import connect
from ml.clouds.local import stack_outputs
from ml.errors import GateFailedError
from ml.spec import load_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _fresh_stack(name: str):
    outputs = stack_outputs(name)
    shutil.rmtree(outputs["root"], ignore_errors=True)  # the demo always starts from nothing
    return connect("local", stack_outputs(name))


def run_demo(
    console: Console, reports: Path, *, quiet: bool, emit: Callable[..., None]
) -> dict[str, Any]:
    from ml.cli import write_report  # the same report the pipeline verb writes

    started = time.perf_counter()
    say = (lambda *a, **k: None) if quiet else console.print
    dev, staging = _fresh_stack("demo-dev"), _fresh_stack("demo-staging")
    steps: list[dict[str, Any]] = []

    def run(title: str, spec: str, expect_pass: bool = True):
        say(f"[bold]▶ {title}[/]  ({spec})")
        try:
            with console.status(title) if not quiet else nullcontext():
                result = lifecycle.pipeline(dev, load_spec(EXAMPLES / spec))
        except GateFailedError as exc:
            result = exc.result
        path = write_report(dev, result, reports)
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
        say(f"  v{result.version.version} {result.version.status}, gate {mark}; report {path}")
        for reason in verdict.reasons:
            say(f"    [red]✗[/] {reason}")
        if verdict.passed != expect_pass:
            raise AssertionError(f"demo step {title!r}: gate passed={verdict.passed}")
        return result

    run("train the champion", "credit.toml")
    run("retrain with more boosting steps", "credit_retrain.toml")
    run("a worse challenger", "credit_weak.toml", expect_pass=False)
    live = dev.endpoint.current("credit")
    say(f"  champion still live: v{live.version}")

    back = lifecycle.rollback(dev, "credit", "demo: roll back the retrain")
    say(f"[bold]▶ rollback[/]  live is v{back.version} again; v{live.version} archived")
    promoted = lifecycle.promote(dev, staging, "credit", approve_in_target=True)
    say(
        f"[bold]▶ promote[/]  dev v{back.version} → staging v{promoted.version} "
        f"({promoted.status}), "
        f"lineage {promoted.tags['promoted_from']}"
    )

    predictions = _predict_live(dev, "credit")
    say(
        f"[bold]▶ predict[/]  3 applicants scored by live v{back.version}: "
        + ", ".join(f"{p['probability']:.3f}" for p in predictions)
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
            step["step"], str(step["version"]), step["status"], str(step["roc_auc"]), gate
        )
    table.caption = (
        f"live: v{back.version} · staging: v{promoted.version} · reports in {reports}/credit/"
    )
    result = {
        "model": "credit",
        "live_version": back.version,
        "staging_version": promoted.version,
        "steps": steps,
        "predictions": predictions,
        "seconds": round(elapsed, 2),
    }
    emit(result, table)
    return result


def _predict_live(stack, model: str) -> list[dict[str, Any]]:
    """Score a few rows with the artifact that is live, through the endpoint's own core."""
    rows = [
        {"age": 34, "income": 52000.0, "debt_ratio": 0.21, "late_payments": 0, "credit_lines": 4,
         "employment": "salaried"},
        {"age": 51, "income": 23000.0, "debt_ratio": 0.62, "late_payments": 3, "credit_lines": 9,
         "employment": "unemployed"},
        {"age": 27, "income": None, "debt_ratio": 0.35, "late_payments": 1, "credit_lines": 2,
         "employment": "self_employed"},
    ]  # fmt: skip
    return stack.endpoint.invoke(model, rows)["predictions"]
