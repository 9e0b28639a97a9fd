"""`tandem`: the model lifecycle from a terminal or a CI stage.

Every verb takes `--stack` and `--cloud` (local is the default) and `--json` for CI.
Cloud stacks are connected from their Pulumi outputs: `--outputs FILE`, or
`pulumi stack output --json --show-secrets --stack NAME` when the Pulumi CLI is present.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from contract import layout
from ml import lifecycle
from ml.clouds import CLOUDS, connect
from ml.clouds.base import Stack
from ml.errors import ConfigError, GateFailedError, TandemError
from ml.spec import load_spec

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Tandem: train, gate, register, deploy and roll back models on local or cloud stacks.",
)
console = Console()
errors = Console(stderr=True)

KEY_METRICS = ("roc_auc", "accuracy", "f1", "equal_opportunity_difference", "latency_p99_ms")


class State:
    stack_name = "dev"
    cloud = "local"
    outputs_file: Path | None = None
    as_json = False


state = State()


@app.callback()
def main(
    stack: Annotated[
        str, typer.Option("--stack", "-s", help="environment: dev, staging, prod")
    ] = "dev",
    cloud: Annotated[
        str, typer.Option("--cloud", "-c", help=f"one of {', '.join(CLOUDS)}")
    ] = "local",
    outputs: Annotated[
        Path | None,
        typer.Option("--outputs", help="stack outputs JSON (pulumi stack output --json)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output for CI")] = False,
) -> None:
    if cloud not in CLOUDS:
        raise typer.BadParameter(f"unknown cloud {cloud!r}: expected one of {', '.join(CLOUDS)}")
    state.stack_name, state.cloud, state.outputs_file, state.as_json = (
        stack,
        cloud,
        outputs,
        as_json,
    )


def stack_outputs(cloud: str, name: str, outputs_file: Path | None) -> dict[str, Any]:
    if outputs_file is not None:
        try:
            return json.loads(outputs_file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{outputs_file}: cannot read stack outputs: {exc}") from None
    if cloud == "local":
        from ml.clouds.local import stack_outputs as local_outputs

        return local_outputs(name)
    if shutil.which("pulumi") is None:
        raise ConfigError(
            f"--cloud {cloud}: pass --outputs FILE (from `pulumi stack output --json`) "
            "or install the Pulumi CLI"
        )
    done = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", name],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ConfigError(f"pulumi stack output --stack {name} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def open_stack(name: str | None = None) -> Stack:
    name = name or state.stack_name
    return connect(state.cloud, stack_outputs(state.cloud, name, state.outputs_file))


def emit(payload: Any, human: Any = None) -> None:
    """Print JSON in --json mode, else the rich renderable (or the payload)."""
    if state.as_json:
        print(json.dumps(_plain(payload), indent=2, default=str))
    else:
        console.print(human if human is not None else payload)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@contextmanager
def progress_line(title: str):
    """A spinner with elapsed time; yields a callback that updates its text."""
    if state.as_json:
        yield lambda line: None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    ) as bar:
        task = bar.add_task(title, total=None)
        yield lambda line: bar.update(task, description=f"{title}: {line}")


def fail(exc: TandemError, code: int = 1) -> typer.Exit:
    if state.as_json:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
    else:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def verdict_table(report: lifecycle.EvaluationReport) -> Table:
    table = Table(
        title="gate " + ("[green]PASSED[/]" if report.verdict.passed else "[red]FAILED[/]")
    )
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for check in report.verdict.checks:
        table.add_row(
            check.name, "[green]pass[/]" if check.passed else "[red]FAIL[/]", check.detail
        )
    return table


def write_report(stack: Stack, result: lifecycle.PipelineResult, out_dir: Path) -> Path:
    """Render the run's HTML report locally and keep a copy in the stack's store."""
    from ml import report

    page = report.render(
        model=result.spec.name,
        run_id=result.outcome.run_id,
        stack=f"{stack.cloud}:{stack.name}",
        candidate=result.report.candidate,
        verdict=result.report.verdict,
        champion=result.report.champion,
        champion_version=result.report.champion_version,
        version=result.version.version,
        card=result.outcome.card,
    )
    path = report.write(out_dir / result.spec.name / f"{result.outcome.run_id}.html", page)
    stack.store.put_bytes(layout.report_key(result.spec.name, result.outcome.run_id), page.encode())
    return path


def summary(result: lifecycle.PipelineResult, report_path: Path | None) -> dict[str, Any]:
    return {
        "model": result.spec.name,
        "version": result.version.version,
        "status": result.version.status,
        "run_id": result.outcome.run_id,
        "metrics": {k: result.outcome.card["metrics"].get(k) for k in KEY_METRICS},
        "gate": result.report.verdict.to_dict(),
        "deployed": result.deployment.version if result.deployment else None,
        "report": str(report_path) if report_path else None,
    }


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(help="model spec TOML")],
    data: Annotated[str | None, typer.Option(help="dataset path/URI (default: the spec's)")] = None,
) -> None:
    """Run a training job on the stack and record the run."""
    try:
        stack = open_stack()
        with progress_line("training") as say:
            outcome = lifecycle.train(stack, load_spec(spec), data_uri=data, progress=say)
    except TandemError as exc:
        raise fail(exc) from None
    emit(
        {
            "run_id": outcome.run_id,
            "artifact_uri": outcome.artifact_uri,
            "metrics": outcome.card["metrics"],
        },
        f"[green]trained[/] run [bold]{outcome.run_id}[/] → {outcome.artifact_uri}",
    )


@app.command()
def runs(
    model: Annotated[str | None, typer.Argument(help="only this model's runs")] = None,
    compare: Annotated[
        list[str] | None, typer.Option("--compare", help="run ids to compare")
    ] = None,
) -> None:
    """List recorded runs (params, metrics, data hash, code version), or compare some."""
    try:
        records = lifecycle.list_runs(open_stack(), model)
    except TandemError as exc:
        raise fail(exc) from None
    if compare:
        records = [r for r in records if r["run_id"] in compare]
    table = Table(title=f"runs on {state.cloud}:{state.stack_name}")
    for column in ("run", "model", *KEY_METRICS[:3], "data hash", "code"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r["run_id"],
            r["model"],
            *(f"{r['metrics'].get(k, float('nan')):.4f}" for k in KEY_METRICS[:3]),
            r["data_hash"][7:19],
            r["code_version"],
        )
    if compare and len(records) > 1:
        params = sorted({k for r in records for k in r["params"]})
        differing = [
            k for k in params if len({json.dumps(r["params"].get(k)) for r in records}) > 1
        ]
        table.caption = "params that differ: " + (
            ", ".join(
                f"{k}=" + "/".join(str(r["params"].get(k)) for r in records) for k in differing
            )
            or "none"
        )
    emit(records, table)


@app.command()
def evaluate(
    spec: Annotated[Path, typer.Argument(help="model spec TOML")],
    run_id: Annotated[str, typer.Argument(help="a run from `tandem runs`")],
) -> None:
    """Gate a trained run against the spec and the current champion (exit 1 if it fails)."""
    try:
        stack, model_spec = open_stack(), load_spec(spec)
        outcome = lifecycle.load_run(stack, model_spec.name, run_id)
        with progress_line("evaluating") as say:
            report = lifecycle.evaluate(stack, model_spec, outcome, progress=say)
    except TandemError as exc:
        raise fail(exc) from None
    emit(report.verdict.to_dict(), verdict_table(report))
    if not report.verdict.passed:
        raise typer.Exit(1)


@app.command()
def register(
    spec: Annotated[Path, typer.Argument(help="model spec TOML")],
    run_id: Annotated[str, typer.Argument(help="a run from `tandem runs`")],
) -> None:
    """Evaluate a run and register it: pending if it passed its gates, rejected if not."""
    try:
        stack, model_spec = open_stack(), load_spec(spec)
        outcome = lifecycle.load_run(stack, model_spec.name, run_id)
        version, report = lifecycle.submit(stack, model_spec, outcome)
    except TandemError as exc:
        raise fail(exc) from None
    emit({"version": version, "gate": report.verdict.to_dict()}, verdict_table(report))
    if not report.verdict.passed:
        raise typer.Exit(1)


def _status_change(action, model: str, version: int, reason: str) -> None:
    try:
        mv = action(open_stack(), model, version, reason)
    except TandemError as exc:
        raise fail(exc) from None
    emit(mv, f"{model} v{version}: [bold]{mv.status}[/]")


@app.command()
def approve(
    model: str, version: int, reason: Annotated[str, typer.Option(help="why")] = "approved"
) -> None:
    """Approve a pending version."""
    _status_change(lifecycle.approve, model, version, reason)


@app.command()
def reject(
    model: str, version: int, reason: Annotated[str, typer.Option(help="why")] = "rejected"
) -> None:
    """Reject a pending version."""
    _status_change(lifecycle.reject, model, version, reason)


@app.command()
def models(model: Annotated[str | None, typer.Argument()] = None) -> None:
    """A table of versions with their status, key metrics and what is live."""
    try:
        stack = open_stack()
        names = [model] if model else stack.registry.list_models()
        versions = [v for name in names for v in stack.registry.list_versions(name)]
        live = {name: stack.endpoint.current(name) for name in names}
    except TandemError as exc:
        raise fail(exc) from None
    table = Table(title=f"models on {state.cloud}:{state.stack_name}")
    widths = {"model": max([5, *map(len, names)]), "v": 2, "status": 8, "auc": 5, "acc": 5,
              "f1": 5, "eo gap": 6, "live": 4}  # fmt: skip
    for column, width in widths.items():
        table.add_column(column, no_wrap=True, min_width=width)
    table.add_column("reason", overflow="fold")
    colour = {"approved": "green", "rejected": "red", "archived": "dim", "pending": "yellow"}
    for v in versions:
        current = live.get(v.model)
        table.add_row(
            v.model,
            str(v.version),
            f"[{colour[v.status]}]{v.status}[/]",
            *(f"{v.metrics[k]:.3f}" if k in v.metrics else "-" for k in KEY_METRICS[:4]),
            "●" if current and current.version == v.version else "",
            v.status_reason,
        )
    emit(versions, table)


@app.command()
def deploy(
    model: str,
    version: Annotated[int | None, typer.Argument(help="default: newest approved")] = None,
    canary: Annotated[
        float | None, typer.Option(help="share of traffic for the new version")
    ] = None,
) -> None:
    """Deploy an approved version to the stack's endpoint."""
    try:
        deployment = lifecycle.deploy(open_stack(), model, version, canary_weight=canary)
    except TandemError as exc:
        raise fail(exc) from None
    emit(deployment, f"[green]live[/] {model} v{deployment.version} at {deployment.endpoint}")


@app.command()
def rollback(model: str, reason: Annotated[str, typer.Option(help="why")] = "rolled back") -> None:
    """Archive the live version and re-deploy the previous approved one."""
    try:
        deployment = lifecycle.rollback(open_stack(), model, reason)
    except TandemError as exc:
        raise fail(exc) from None
    emit(deployment, f"[yellow]rolled back[/] {model} to v{deployment.version}")


@app.command()
def promote(
    model: str,
    to: Annotated[str, typer.Option("--to", help="target stack, e.g. staging")],
    version: Annotated[int | None, typer.Option(help="default: newest approved")] = None,
    to_outputs: Annotated[Path | None, typer.Option(help="target stack outputs JSON")] = None,
    approve_target: Annotated[
        bool, typer.Option("--approve", help="approve in the target")
    ] = False,
) -> None:
    """Copy an approved version to another stack (e.g. dev → staging), keeping lineage."""
    try:
        source = open_stack()
        target = connect(state.cloud, stack_outputs(state.cloud, to, to_outputs))
        promoted = lifecycle.promote(
            source, target, model, version, approve_in_target=approve_target
        )
    except TandemError as exc:
        raise fail(exc) from None
    emit(promoted, f"promoted {model} → {to} as v{promoted.version} ({promoted.status})")


@app.command()
def pipeline(
    spec: Annotated[Path, typer.Argument(help="model spec TOML")],
    data: Annotated[str | None, typer.Option(help="dataset path/URI (default: the spec's)")] = None,
    approve_passed: Annotated[
        bool, typer.Option("--approve/--no-approve", help="approve on pass")
    ] = True,
    deploy_approved: Annotated[
        bool, typer.Option("--deploy/--no-deploy", help="deploy on approval")
    ] = True,
    reports: Annotated[Path, typer.Option(help="where HTML reports go")] = Path("reports"),
) -> None:
    """The CI stages: train → evaluate → register → approve → deploy. Exit 1 at a failed gate."""
    try:
        stack = open_stack()
        with progress_line("pipeline") as say:
            result = lifecycle.pipeline(
                stack, load_spec(spec), auto_approve=approve_passed,
                deploy_approved=deploy_approved, data_uri=data, progress=say,
            )  # fmt: skip
    except GateFailedError as exc:
        path = write_report(stack, exc.result, reports)
        emit(summary(exc.result, path), verdict_table(exc.result.report))
        raise fail(exc) from None
    except TandemError as exc:
        raise fail(exc) from None
    path = write_report(stack, result, reports)
    emit(summary(result, path), _summary_table(summary(result, path)))


def _summary_table(s: dict[str, Any]) -> Table:
    table = Table(show_header=False, title=f"{s['model']} v{s['version']}")
    table.add_row("status", s["status"])
    table.add_row(
        "gate",
        "[green]passed[/]"
        if s["gate"]["passed"]
        else "[red]failed[/]: " + "; ".join(s["gate"]["reasons"]),
    )
    for k, v in s["metrics"].items():
        table.add_row(k, "-" if v is None else f"{v:.4f}")
    table.add_row("deployed", str(s["deployed"]))
    table.add_row("report", str(s["report"]))
    return table


@app.command(name="data")
def generate_data(
    out: Annotated[Path, typer.Argument(help="CSV or .parquet file to write")],
    rows: int = 4000,
    seed: int = 7,
    shift: Annotated[float, typer.Option(help="0 = training distribution, 1 = strong shift")] = 0.0,
) -> None:
    """Write the synthetic credit data set (for drift and fairness experiments)."""
    from ml.datasets import credit

    try:
        frame = credit(rows=rows, seed=seed, shift=shift)
    except TandemError as exc:
        raise fail(exc) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False) if out.suffix == ".parquet" else frame.to_csv(
        out, index=False
    )
    emit({"path": str(out), "rows": len(frame)}, f"wrote {len(frame)} rows to {out}")


@app.command()
def demo(
    reports: Annotated[Path, typer.Option(help="where HTML reports go")] = Path("reports"),
) -> None:
    """The whole lifecycle on the local stack, start to finish, in well under a minute."""
    from ml.demo import run_demo

    state.cloud = "local"
    try:
        run_demo(console, reports, quiet=state.as_json, emit=emit)
    except TandemError as exc:
        raise fail(exc) from None


if __name__ == "__main__":
    app()
