"""`tandem`: the model lifecycle from a terminal or a CI stage.

Every verb takes `--stack` and `--cloud` (local is the default) and `--json` for CI.
Where a stack's outputs come from is `ml.clouds.outputs.read_outputs`; what a verb does lives
in `ml.lifecycle`. This module parses, prints and chooses exit codes:

- 0 success; 1 a failed gate or a TandemError (one line, `{"error", "type"}` with --json);
  2 a usage error (an unknown cloud, a model or stack name that breaks its naming rule),
  reported like any other error: one line, or one JSON object;
  130 / 143 stopped by SIGINT / SIGTERM (the console script only, see TandemApp).
- Every message printed through rich is escaped: a `[aws]` or `'^{0,38}$'` in an error
  reaches the terminal as written.
"""

from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from contract.naming import check_stack_name
from contract.serving import UNSEEN_KEY
from ml import lifecycle, tasks
from ml.clouds import CLOUDS, connect
from ml.clouds.base import Stack, checked_model, primary_version
from ml.clouds.outputs import read_outputs
from ml.errors import GateFailedError, InvalidNameError, NotFoundError, TandemError
from ml.rows import live_schema, rows_from_text
from ml.spec import ModelSpec, load_spec

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, like KeyboardInterrupt, so no `except
    Exception` swallows it and every `finally` on the way out runs (a job runner stops its
    training child, temporary directories go)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _raise_interrupted(signum: int, frame: Any) -> None:
    for number in STOP_SIGNALS:  # a second signal during the clean-up stops at once
        signal.signal(number, signal.SIG_DFL)
    raise Interrupted(signum)


class TandemApp(typer.Typer):
    """The console-script entry (`tandem = ml.cli:app`): a clean stop on SIGINT / SIGTERM.

    Handlers are installed here only, never by the lifecycle or by `CliRunner` (which calls
    the click command directly), so a library caller keeps its own signal handling.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
        for number in STOP_SIGNALS:
            signal.signal(number, _raise_interrupted)
        try:
            return super().__call__(*args, **kwargs)
        except Interrupted as stop:
            name = signal.Signals(stop.signum).name
            report_error(
                f"interrupted by {name}: stopped before the command finished", "Interrupted"
            )
            sys.exit(128 + stop.signum)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


app = TandemApp(
    no_args_is_help=True,
    add_completion=False,
    help="Tandem: train, gate, register, deploy and roll back models on local or cloud stacks.",
)
console = Console()
errors = Console(stderr=True)

# what a table shows of a version's metrics: the first few of these it has (each task's
# primary metric first, then the task's other metrics in their order), then its fairness gap
KEY_METRICS = tuple(
    dict.fromkeys(
        [*tasks.PRIMARY_METRIC.values(), *(m for ms in tasks.METRICS.values() for m in ms)]
    )
)


def headline(metrics: dict[str, float], most: int = 3) -> str:
    shown = [k for k in KEY_METRICS if k in metrics][:most]
    return " ".join(f"{k} {metrics[k]:.3f}" for k in shown) or "-"


def fairness_cell(metrics: dict[str, float]) -> str:
    gaps = [k for k in tasks.TITLES if k in metrics]
    return f"{metrics[gaps[0]]:.3f}" if gaps else "-"


class State:
    stack_name = "dev"
    cloud = "local"
    outputs_file: Path | None = None
    as_json = False


state = State()


@app.callback()
def main(
    stack: Annotated[
        str,
        typer.Option("--stack", "-s", help="environment: dev, staging, prod"),
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
    state.stack_name, state.cloud, state.outputs_file, state.as_json = (
        stack,
        cloud,
        outputs,
        as_json,
    )
    # checked once --json is known, so the error comes in the form asked for
    if cloud not in CLOUDS:
        raise usage_error(f"unknown cloud {cloud!r}: expected one of {', '.join(CLOUDS)}")
    stack_name(stack)


def model_name(value: str | None) -> str | None:
    """Typer callback: a MODEL argument must follow the one naming rule, checked before any
    stack is opened (a name is a path segment in every store and registry)."""
    if value is None:
        return None
    try:
        return checked_model(value)
    except InvalidNameError as exc:
        raise usage_error(str(exc), type(exc).__name__) from None


def stack_name(value: str) -> str:
    """Typer callback: a stack name is a directory locally and a Pulumi stack elsewhere."""
    try:
        return check_stack_name(value)
    except ValueError as exc:
        raise usage_error(str(exc), InvalidNameError.__name__) from None


Model = Annotated[str, typer.Argument(help="model name", callback=model_name)]


def open_stack(
    name: str | None = None, outputs_file: Path | None = None, cloud: str | None = None
) -> Stack:
    """The stack a verb acts on (the global --cloud/--stack/--outputs), or the one named."""
    if name is None:
        name, outputs_file = state.stack_name, state.outputs_file
    cloud = cloud or state.cloud
    return connect(cloud, read_outputs(cloud, name, outputs_file))


def stack_ref(value: str | None) -> str | None:
    """Typer callback: `STACK` or `CLOUD:STACK` (a promotion may cross clouds)."""
    if value is None:
        return None
    cloud, _, name = value.rpartition(":")
    if cloud and cloud not in CLOUDS:
        raise usage_error(
            f"unknown cloud {cloud!r} in {value!r}: expected one of {', '.join(CLOUDS)}"
        )
    stack_name(name)
    return value


def split_ref(value: str | None) -> tuple[str, str]:
    """(cloud, stack) of a `stack_ref`; the global --cloud when it names none, and the
    global --stack when there is no value at all."""
    if value is None:
        return state.cloud, state.stack_name
    cloud, _, name = value.rpartition(":")
    return cloud or state.cloud, name


def emit(payload: Any, human: Any = None) -> None:
    """Print JSON in --json mode, else the rich renderable (or the payload).

    A human string is rich markup: escape whatever it interpolates (`rich.markup.escape`).
    """
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
        yield lambda line: bar.update(task, description=escape(f"{title}: {line}"))


def report_error(message: str, kind: str) -> None:
    """One error: a JSON object on stdout with --json, else one line on stderr."""
    if state.as_json:
        print(json.dumps({"error": message, "type": kind}))
    else:
        errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(exc: BaseException, code: int = 1) -> typer.Exit:
    report_error(str(exc), type(exc).__name__)
    return typer.Exit(code)


def usage_error(message: str, kind: str = "UsageError") -> typer.Exit:
    """A bad argument: one line (or one JSON object), exit 2. Not click's boxed usage
    error, which folds a long message over lines and prints no JSON for CI."""
    report_error(message, kind)
    return typer.Exit(2)


def spec_from(path: Path) -> ModelSpec:
    """Load the spec once, at the edge; the lifecycle takes the ModelSpec from here on."""
    try:
        return load_spec(path)
    except TandemError as exc:
        raise fail(exc) from None


def verdict_table(report: lifecycle.EvaluationReport) -> Table:
    table = Table(
        title="gate " + ("[green]PASSED[/]" if report.verdict.passed else "[red]FAILED[/]")
    )
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for check in report.verdict.checks:
        table.add_row(
            escape(check.name),
            "[green]pass[/]" if check.passed else "[red]FAIL[/]",
            escape(check.detail),
        )
    return table


def summary(result: lifecycle.PipelineResult, report_path: Path | None) -> dict[str, Any]:
    return {
        "model": result.spec.name,
        "version": result.version.version,
        "status": result.version.status,
        "run_id": result.outcome.run_id,
        "metrics": result.outcome.card["metrics"],
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
    model_spec = spec_from(spec)
    try:
        stack = open_stack()
        with progress_line("training") as say:
            outcome = lifecycle.train(stack, model_spec, data_uri=data, progress=say)
    except TandemError as exc:
        raise fail(exc) from None
    emit(
        {
            "run_id": outcome.run_id,
            "artifact_uri": outcome.artifact_uri,
            "metrics": outcome.card["metrics"],
        },
        f"[green]trained[/] run [bold]{escape(outcome.run_id)}[/] → {escape(outcome.artifact_uri)}",
    )


@app.command()
def runs(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[MODEL] [RUN...]",
            help="a model to list; with --compare, the run ids to compare (a model first is "
            "allowed: `runs credit --compare A B`)",
        ),
    ] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="compare the runs given as arguments")
    ] = False,
) -> None:
    """List recorded runs (params, metrics, data hash, code version), or compare some."""
    names = list(names or [])
    if not compare and len(names) > 1:
        raise usage_error(
            f"expected at most one MODEL, got {len(names)} arguments: to compare runs, "
            "use `tandem runs [MODEL] --compare RUN RUN ...`"
        )
    if compare and not names:
        raise usage_error("--compare needs the run ids to compare")
    model = model_name(names[0]) if names and not compare else None
    try:
        records = lifecycle.list_runs(open_stack(), model)
        if compare:
            records = _chosen_runs(records, names)
    except TandemError as exc:
        raise fail(exc) from None
    table = Table(title=f"runs on {escape(state.cloud)}:{escape(state.stack_name)}")
    for column in ("run", "model", "metrics", "data hash", "code"):
        table.add_column(column)
    for r in records:
        table.add_row(
            escape(r["run_id"]),
            escape(r["model"]),
            headline(r["metrics"]),
            escape(r["data_hash"][7:19]),
            escape(str(r["code_version"])),
        )
    if compare and len(records) > 1:
        params = sorted({k for r in records for k in r["params"]})
        differing = [
            k for k in params if len({json.dumps(r["params"].get(k)) for r in records}) > 1
        ]
        table.caption = "params that differ: " + escape(
            ", ".join(
                f"{k}=" + "/".join(str(r["params"].get(k)) for r in records) for k in differing
            )
            or "none"
        )
    emit(records, table)


def _chosen_runs(records: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The runs named for --compare, in the order given. A first name that is no run id but
    a model with runs restricts them to that model; an unknown run id is NotFoundError."""
    by_id = {r["run_id"]: r for r in records}
    model = None
    if names[0] not in by_id and names[0] in {r["model"] for r in records}:
        model, names = names[0], names[1:]
        if not names:
            raise NotFoundError(f"--compare: no run ids given for model {model!r}")
    unknown = [n for n in names if n not in by_id]
    if unknown:
        raise NotFoundError(
            f"no run {', '.join(map(repr, unknown))} on stack {state.stack_name!r} "
            "(see `tandem runs`)"
        )
    other = [n for n in names if model and by_id[n]["model"] != model]
    if other:
        raise NotFoundError(f"run {', '.join(map(repr, other))} is not a run of {model!r}")
    return [by_id[n] for n in dict.fromkeys(names)]


@app.command()
def evaluate(
    spec: Annotated[Path, typer.Argument(help="model spec TOML")],
    run_id: Annotated[str, typer.Argument(help="a run from `tandem runs`")],
) -> None:
    """Gate a trained run against the spec and the current champion (exit 1 if it fails)."""
    model_spec = spec_from(spec)
    try:
        stack = open_stack()
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
    model_spec = spec_from(spec)
    try:
        stack = open_stack()
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
    emit(mv, f"{escape(model)} v{version}: [bold]{escape(mv.status)}[/]")


@app.command()
def approve(
    model: Model, version: int, reason: Annotated[str, typer.Option(help="why")] = "approved"
) -> None:
    """Approve a pending version."""
    _status_change(lifecycle.approve, model, version, reason)


@app.command()
def reject(
    model: Model, version: int, reason: Annotated[str, typer.Option(help="why")] = "rejected"
) -> None:
    """Reject a pending version."""
    _status_change(lifecycle.reject, model, version, reason)


@app.command()
def models(
    model: Annotated[
        str | None, typer.Argument(help="only this model", callback=model_name)
    ] = None,
) -> None:
    """A table of versions with their status, key metrics and what is live.

    With --json: one object per version, with `live` (true for every version the endpoint
    serves: the primary and, while one runs, the canary), `traffic` (its share of requests)
    and `canary_weight` (set on the canary only).
    """
    try:
        stack = open_stack()
        names = [model] if model else stack.registry.list_models()
        versions = [v for name in names for v in stack.registry.list_versions(name)]
        live = {name: stack.endpoint.current(name) for name in names}
    except TandemError as exc:
        raise fail(exc) from None

    def traffic(v) -> float | None:
        """The share of `v`'s model's traffic that `v` answers (None: not deployed)."""
        current = live.get(v.model)
        if current is None:
            return None
        if current.canary_weight is None:
            return 1.0 if current.version == v.version else None
        if current.version == v.version:
            return current.canary_weight
        return 1.0 - current.canary_weight if primary_version(current) == v.version else None

    listed = [
        {
            **_plain(v),
            "live": traffic(v) is not None,
            "traffic": traffic(v),
            "canary_weight": live[v.model].canary_weight
            if traffic(v) is not None and live[v.model].version == v.version
            else None,
        }
        for v in versions
    ]
    table = Table(title=f"models on {escape(state.cloud)}:{escape(state.stack_name)}")
    widths = {"model": max([5, *map(len, names)]), "v": 2, "status": 8, "metric": 13,
              "fairness gap": 6, "live": 4}  # fmt: skip
    for column, width in widths.items():
        table.add_column(column, no_wrap=True, min_width=width)
    table.add_column("reason", overflow="fold")
    colour = {"approved": "green", "rejected": "red", "archived": "dim", "pending": "yellow"}
    for v, row in zip(versions, listed, strict=True):
        canary = row["canary_weight"]
        table.add_row(
            escape(v.model),
            str(v.version),
            f"[{colour.get(v.status, 'default')}]{escape(v.status)}[/]",
            headline(v.metrics, most=1),  # the task's primary metric: the table stays narrow
            fairness_cell(v.metrics),
            _traffic_mark(row["traffic"], canary),
            escape(v.status_reason),
        )
    emit(listed, table)


def _traffic_mark(share: float | None, canary: float | None) -> str:
    if share is None:
        return ""
    if canary is not None:
        return f"canary {share:.0%}"
    return "●" if share == 1.0 else f"● {share:.0%}"


@app.command()
def deploy(
    model: Model,
    version: Annotated[int | None, typer.Argument(help="default: newest approved")] = None,
    canary: Annotated[
        float | None,
        typer.Option(help="share of traffic for the new version, e.g. 0.1 (0 < share < 1)"),
    ] = None,
    promote_canary: Annotated[
        bool, typer.Option("--promote-canary", help="send all traffic to the running canary")
    ] = False,
) -> None:
    """Deploy an approved version to the stack's endpoint, smoke-test it, and go back to what
    was live if the smoke request fails."""
    if promote_canary and (version is not None or canary is not None):
        raise usage_error("--promote-canary takes no VERSION and no --canary")
    try:
        stack = open_stack()
        if promote_canary:
            deployment = lifecycle.promote_canary(stack, model)
        else:
            deployment = lifecycle.deploy(stack, model, version, canary_weight=canary)
    except TandemError as exc:
        raise fail(exc) from None
    where = escape(deployment.endpoint)
    if deployment.canary_weight is None:
        human = f"[green]live[/] {escape(model)} v{deployment.version} at {where}"
    else:
        primary = primary_version(deployment)
        human = (
            f"[green]canary[/] {escape(model)} v{deployment.version} takes "
            f"{deployment.canary_weight:.0%} of the traffic, v{primary} the rest, at {where}"
        )
    emit(deployment, human)


@app.command()
def rollback(
    model: Model, reason: Annotated[str, typer.Option(help="why")] = "rolled back"
) -> None:
    """Archive the live version and re-deploy the previous approved one."""
    try:
        deployment = lifecycle.rollback(open_stack(), model, reason)
    except TandemError as exc:
        raise fail(exc) from None
    emit(deployment, f"[yellow]rolled back[/] {escape(model)} to v{deployment.version}")


StackOption = Annotated[
    str | None,
    typer.Option("--stack", "-s", help="environment (default: the global --stack)"),
]


def _stack_for(name: str | None) -> Stack:
    return open_stack(stack_name(name) if name else None)


@app.command()
def serve(
    model: Model,
    stack: StackOption = None,
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0: any free port)")] = 8080,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(help="requests served at once", min=1)] = 8,
    capture: Annotated[
        float,
        typer.Option(
            help="share of requests kept for monitoring (0 to 1), under captures/ in the "
            "stack's store, personal columns keyed-hashed",
            min=0.0,
            max=1.0,
        ),
    ] = 0.0,
) -> None:
    """Serve what is live for MODEL on the local stack over HTTP (POST /predict, GET /health).

    Follows deploys, canaries and rollbacks without a restart; stops cleanly on Ctrl-C or
    SIGTERM. On a cloud stack the endpoint is the cloud's own: use `tandem predict`.
    """
    from deploy.capture import Capture, DirectorySink
    from deploy.server import serve_state

    try:
        opened = _stack_for(stack)
        if opened.cloud != "local":
            raise TandemError(
                f"`tandem serve` runs the local stack's endpoint; {opened.cloud}:{opened.name} "
                "serves from the cloud (score through it with `tandem predict`)"
            )
        live = opened.endpoint.current(model)
        if live is None:
            raise NotFoundError(
                f"model {model!r} is not deployed on stack {opened.name!r}: "
                f"`tandem deploy {model}` first"
            )
        state_path = opened.endpoint.state_path(model)
        kept = None
        if capture > 0.0:
            card = lifecycle.read_card(opened, live.artifact_uri)
            kept = Capture(
                DirectorySink(opened.store.root),
                sample=capture,
                personal_columns=card["spec"].get("personal_data") or (),
                key=opened.pseudonym_key() if opened.pseudonym_key else None,
            )
    except TandemError as exc:
        raise fail(exc) from None
    serve_state(state_path, host=host, port=port, workers=workers, capture=kept)


@app.command()
def predict(
    model: Model,
    source: Annotated[
        str, typer.Argument(help="a JSON or CSV file of rows, or - for standard input")
    ],
    stack: StackOption = None,
    route: Annotated[
        str | None, typer.Option(help="pin the request to the live or the canary version")
    ] = None,
) -> None:
    """Score rows through the stack's endpoint, as a client would.

    JSON: a list of row objects, one object, {"instances": [...]} or {"inputs": {...}}.
    CSV: a header row, then one row per line (typed by the live model's input schema).
    """
    if route not in (None, "live", "canary"):
        raise usage_error(f"--route must be live or canary, not {route!r}")
    try:
        opened = _stack_for(stack)
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        rows = rows_from_text(text, lambda: live_schema(opened, model))
        answer = opened.endpoint.invoke(model, rows, route=route)
    except OSError as exc:
        raise fail(TandemError(f"{source}: cannot read ({exc.strerror or exc})")) from None
    except TandemError as exc:
        raise fail(exc) from None
    emit(answer, prediction_table(answer))


def prediction_table(answer: dict[str, Any]) -> Table:
    """One line per row: the prediction and, for a classifier, each class's probability."""
    table = Table(
        title=f"{escape(str(answer.get('model')))} v{answer.get('version')} "
        f"(request {escape(str(answer.get('request_id')))})"
    )
    classes = answer.get("classes") or []
    probabilities = answer.get("probabilities") or []
    for column in ("row", "prediction", *(f"p({c})" for c in classes)):
        table.add_column(escape(str(column)))
    for i, prediction in enumerate(answer["predictions"]):
        shares = probabilities[i] if i < len(probabilities) else []
        table.add_row(str(i), escape(str(prediction)), *(f"{p:.3f}" for p in shares))
    unseen = answer.get(UNSEEN_KEY)
    if isinstance(unseen, dict):  # the model's rule scored unseen categories as missing
        shown = ", ".join(
            f"row {v.get('row')} {v.get('field')}={v.get('value')!r}"
            for v in unseen.get("values") or ()
        )
        table.caption = escape(
            f"{unseen.get('count')} unseen category value(s) scored as missing: {shown}"
        )
    return table


@app.command()
def promote(
    model: Model,
    to: Annotated[
        str,
        typer.Option(
            "--to", help="target [CLOUD:]STACK, e.g. staging or azure:staging", callback=stack_ref
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="source CLOUD:STACK, e.g. aws:dev (default: --cloud and --stack)",
            callback=stack_ref,
        ),
    ] = None,
    version: Annotated[int | None, typer.Option(help="default: newest approved")] = None,
    from_outputs: Annotated[
        Path | None, typer.Option(help="source stack outputs JSON (default: --outputs)")
    ] = None,
    to_outputs: Annotated[Path | None, typer.Option(help="target stack outputs JSON")] = None,
    approve_target: Annotated[
        bool, typer.Option("--approve", help="approve in the target")
    ] = False,
) -> None:
    """Copy an approved version to another stack (dev → staging, or across clouds: --from
    aws:dev --to azure:staging), keeping its lineage."""
    from_cloud, from_name = split_ref(source)
    to_cloud, to_name = split_ref(to)
    try:
        origin = open_stack(from_name, from_outputs or state.outputs_file, from_cloud)
        target = open_stack(to_name, to_outputs, to_cloud)
        promoted = lifecycle.promote(
            origin, target, model, version, approve_in_target=approve_target
        )
    except TandemError as exc:
        raise fail(exc) from None
    emit(
        promoted,
        f"promoted {escape(model)} {escape(origin.cloud)}:{escape(origin.name)} → "
        f"{escape(target.cloud)}:{escape(target.name)} as v{promoted.version} "
        f"({escape(promoted.status)})",
    )


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
    """The CI stages: train → evaluate → register → approve → deploy. Exit 1 at a failed gate.

    With --json, one document either way: the run's summary, and at a failed gate the same
    summary with `error` and `type` added (the keys every --json error carries).
    """
    from ml import report

    model_spec = spec_from(spec)
    gate_failure: GateFailedError | None = None
    try:
        stack = open_stack()
        try:
            with progress_line("pipeline") as say:
                result = lifecycle.pipeline(
                    stack, model_spec, auto_approve=approve_passed,
                    deploy_approved=deploy_approved, data_uri=data, progress=say,
                )  # fmt: skip
        except GateFailedError as exc:  # the rejected version's report is published too
            result, gate_failure = exc.result, exc
        outcome = summary(result, report.publish(stack, result, reports))
    except TandemError as exc:
        raise fail(exc) from None
    if gate_failure is None:
        emit(outcome, _summary_table(outcome))
        return
    if state.as_json:
        emit({**outcome, "error": str(gate_failure), "type": type(gate_failure).__name__})
    else:
        emit(outcome, verdict_table(result.report))
        report_error(str(gate_failure), type(gate_failure).__name__)
    raise typer.Exit(1)


def _summary_table(s: dict[str, Any]) -> Table:
    table = Table(show_header=False, title=f"{escape(s['model'])} v{s['version']}")
    table.add_row("status", escape(s["status"]))
    table.add_row(
        "gate",
        "[green]passed[/]"
        if s["gate"]["passed"]
        else "[red]failed[/]: " + escape("; ".join(s["gate"]["reasons"])),
    )
    for k, v in s["metrics"].items():
        table.add_row(k, "-" if v is None else f"{v:.4f}")
    table.add_row("deployed", str(s["deployed"]))
    table.add_row("report", escape(str(s["report"])))
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
    emit({"path": str(out), "rows": len(frame)}, f"wrote {len(frame)} rows to {escape(str(out))}")


@app.command()
def demo(
    reports: Annotated[Path, typer.Option(help="where HTML reports go")] = Path("reports"),
    examples: Annotated[
        Path | None,
        typer.Option(
            help="a directory with credit.toml, credit_retrain.toml and credit_weak.toml "
            "(default: the bundled examples)"
        ),
    ] = None,
) -> None:
    """The whole lifecycle on the local stack, start to finish, in well under a minute.

    Never ends in a traceback: a step that does not behave as the story says, or anything
    else that goes wrong, is one line on stderr and exit 1.
    """
    from ml.demo import EXAMPLES, run_demo

    state.cloud = "local"
    try:
        run_demo(console, reports, quiet=state.as_json, emit=emit, examples=examples or EXAMPLES)
    except TandemError as exc:
        raise fail(exc) from None
    except Exception as exc:  # `make demo` is a newcomer's first run: one line, not a trace
        report_error(f"the demo failed unexpectedly: {type(exc).__name__}: {exc}", "DemoError")
        raise typer.Exit(1) from None


@app.command()
def bundle(
    target: Annotated[
        str, typer.Option(help="the endpoint to package for: aws (Lambda) or azure (Functions)")
    ] = "aws",
    out: Annotated[
        Path | None,
        typer.Option(help="where the archive goes [default: build/lambda, build/azure-functions]"),
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="Lambda architecture: arm64 or x86_64 [default: arm64]")
    ] = None,
    python: Annotated[
        str | None, typer.Option(help="the Lambda runtime's Python [default: 3.12]")
    ] = None,
) -> None:
    """Build an endpoint's deployment archive: the Lambda's (handler, inference core, numpy +
    onnxruntime wheels for the runtime), sized against Lambda's limits and Tandem's budget; or
    the Azure Functions package Flex Consumption's one-deploy builds remotely."""
    from deploy import bundle as packaging

    if target not in ("aws", "azure"):
        raise usage_error(
            f"--target {target!r}: expected 'aws' (Lambda) or 'azure' (Flex Consumption)"
        )
    if target == "azure":
        if arch is not None or python is not None:
            raise usage_error(
                "--arch and --python are for --target aws: Flex Consumption's remote build "
                "installs the dependencies for the function app's own runtime"
            )
        return _bundle_azure(out or Path("build/azure-functions"))
    arch, python = arch or "arm64", python or "3.12"
    if arch not in packaging.PLATFORMS:
        raise usage_error(f"--arch {arch!r}: expected one of {', '.join(packaging.PLATFORMS)}")
    try:
        archive = packaging.build_lambda_zip(out or Path("build/lambda"), python=python, arch=arch)
    except (OSError, RuntimeError, ValueError) as exc:
        raise fail(exc) from None
    report = packaging.bundle_report(archive)
    mb = 1e6
    lines = [
        f"[bold]{escape(str(archive))}[/] (python{escape(python)}, {arch})",
        f"  unzipped {report['unzipped_bytes'] / mb:.1f} MB: "
        + ("[green]within[/]" if report["within_budget"] else "[red]over[/]")
        + f" Tandem's {packaging.UNZIPPED_BUDGET / mb:.0f} MB budget "
        f"(Lambda allows {packaging.LAMBDA_UNZIPPED_LIMIT / mb:.0f} MB)",
        f"  zipped {report['zipped_bytes'] / mb:.1f} MB "
        + (
            "(fits Lambda's 50 MB direct upload)"
            if report["zipped_bytes"] <= packaging.LAMBDA_DIRECT_UPLOAD_LIMIT
            else "(over Lambda's 50 MB direct upload: ship it through the artifact bucket)"
        ),
        "  largest: "
        + ", ".join(
            f"{escape(p['name'])} {p['unzipped_bytes'] / mb:.1f} MB" for p in report["top"][:5]
        ),
        "  compiled modules: "
        + (
            "yes"
            if report["compiled"]
            else f"[yellow]no[/] (only Python {escape(python)} can compile them: build with it "
            "for a faster cold start)"
        ),
        f"  handler: {packaging.LAMBDA_HANDLER}  CodeSha256: {packaging.sha256_base64(archive)}",
    ]
    emit({**report, "handler": packaging.LAMBDA_HANDLER,
          "code_sha256": packaging.sha256_base64(archive)}, "\n".join(lines))  # fmt: skip


def _bundle_azure(out: Path) -> None:
    import hashlib
    import zipfile

    from deploy import bundle as packaging

    try:
        archive = packaging.build_azure_zip(out)
    except (OSError, ValueError) as exc:
        raise fail(exc) from None
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    lines = [
        f"[bold]{escape(str(archive))}[/] (Azure Functions, Flex Consumption)",
        f"  {len(names)} files, {archive.stat().st_size / 1e3:.1f} kB zipped: "
        f"{', '.join(packaging.AZURE_APP_FILES)} at the root, with deploy/ and contract/",
        "  dependencies: none inside; deploy with a remote build so requirements.txt is installed",
        "  (az functionapp deployment source config-zip --build-remote true --src ...)",
        f"  sha256: {sha256}",
    ]
    emit({"path": str(archive), "files": names, "zipped_bytes": archive.stat().st_size,
          "sha256": sha256, "remote_build": True}, "\n".join(lines))  # fmt: skip


if __name__ == "__main__":
    app()
