"""The lifecycle stages as functions, written once against the cloud Protocols.

train -> evaluate -> register (pending) -> approve | reject -> deploy -> rollback, and
promote (an approved version from one stack to another, lineage kept). CI stages and the
`tandem` CLI call these; no function here asks which cloud it runs on.

Integrity rules every stack gets from here:
- a model name is checked at every entry (contract.naming) before anything is touched;
- choosing a version and pointing the endpoint at it happen under the model's lock
  (`stack.locks`), so a deploy and a rollback never interleave into serving an archived version;
- registration is idempotent per (model, artifact) and promotion per source version: a retry
  returns what the first call made, never a duplicate.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract import layout
from ml import artifact, data, tracking
from ml import train as training
from ml.clouds.base import (
    APPROVED,
    ARCHIVED,
    PENDING,
    REJECTED,
    Deployment,
    ModelVersion,
    Progress,
    Stack,
    checked_model,
    primary_version,
)
from ml.clouds.locks import model_lock
from ml.errors import ConflictError, GateFailedError, NotFoundError, TandemError
from ml.evaluate import Evaluation, Verdict, gate
from ml.spec import ModelSpec, parse_spec


@dataclass
class TrainOutcome:
    run_id: str
    artifact_uri: str
    card: dict[str, Any]

    @property
    def evaluation(self) -> Evaluation:
        return Evaluation.from_dict(self.card["evaluation"])


@dataclass
class EvaluationReport:
    """A candidate and the champion scored on the same holdout rows, and the gate verdict."""

    candidate: Evaluation
    verdict: Verdict
    champion: Evaluation | None = None
    champion_version: int | None = None


@dataclass
class PipelineResult:
    spec: ModelSpec
    outcome: TrainOutcome
    report: EvaluationReport
    version: ModelVersion
    deployment: Deployment | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _say(progress: Progress | None, line: str) -> None:
    if progress:
        progress(line)


def train(
    stack: Stack, spec: ModelSpec, *, data_uri: str | None = None, progress: Progress | None = None
) -> TrainOutcome:
    """Run the training job on the stack and record the run (params, metrics, lineage).

    The job's own checks of the spec and the data (`ml.train.check`) run here first, so a
    typo'd column or a bad estimator parameter fails before any job is submitted; so does a
    tracking URI MLflow would refuse.
    """
    tracking.check_uri()
    source = data_uri or spec.dataset.source
    _say(progress, "checking the spec against the data")
    frame = data.load_frame(source, stack.store, spec.dataset.format)
    training.check(spec, frame, origin=source)
    del frame
    run_id = training.new_run_id(spec.name)
    result = stack.jobs.run_training(
        spec,
        source,
        layout.artifact_key(spec.name, run_id),
        progress=progress,
    )
    card = result.card
    record = {
        "run_id": card["run_id"],
        "model": spec.name,
        "artifact_uri": result.artifact_uri,
        "job_id": result.job_id,
        "logs_uri": result.logs_uri,
        "params": card["params"],
        "metrics": card["metrics"],
        "data_hash": card["data"]["hash"],
        "data_uri": card["data"]["uri"],
        "code_version": card["code_version"],
        "environment": card["environment"],
        "created_at": card["created_at"],
    }
    stack.store.put_bytes(
        layout.run_key(spec.name, card["run_id"]), json.dumps(record, indent=2).encode()
    )
    outcome = TrainOutcome(card["run_id"], result.artifact_uri, card)
    tracking.mirror_training(stack.store, outcome, stack_uri=stack.tracking_uri)
    return outcome


def list_runs(stack: Stack, model: str | None = None) -> list[dict[str, Any]]:
    """Every recorded run (oldest first), optionally of one model."""
    keys = stack.store.list_keys(layout.runs_prefix(model and checked_model(model)))
    runs = [json.loads(stack.store.get_bytes(k)) for k in keys if k.endswith(".json")]
    return sorted(runs, key=lambda r: r["created_at"])


def champion(stack: Stack, model: str) -> ModelVersion | None:
    """The newest approved version: what a deploy takes when not told a version."""
    approved = [
        v for v in stack.registry.list_versions(checked_model(model)) if v.status == APPROVED
    ]
    return approved[-1] if approved else None


def evaluate(
    stack: Stack, spec: ModelSpec, outcome: TrainOutcome, *, progress: Progress | None = None
) -> EvaluationReport:
    """Gate the candidate; score the champion on the candidate's own holdout rows."""
    candidate = outcome.evaluation
    current = champion(stack, spec.name)
    champion_eval = None
    if current is not None:
        _say(progress, f"scoring champion v{current.version} on the same holdout")
        frame = data.load_frame(outcome.card["data"]["uri"], stack.store, spec.dataset.format)
        _, test = data.split(data.validate(frame, spec), spec)
        with tempfile.TemporaryDirectory() as tmp:
            loaded = artifact.load(stack.store.get_artifact(current.artifact_uri, Path(tmp)))
            # the champion reads its own features (a challenger may use others): same rows,
            # the champion's columns
            champion_spec = parse_spec(
                loaded.card["spec"], origin=f"{spec.name} v{current.version}"
            )
            champion_rows = data.validate(frame, champion_spec).loc[test.index]
            champion_eval = training.holdout_evaluation(loaded.model, champion_rows, champion_spec)
    verdict = gate(spec.gates, candidate, champion_eval)
    return EvaluationReport(candidate, verdict, champion_eval, current.version if current else None)


def register(
    stack: Stack, model: str, artifact_uri: str, metrics: dict[str, float], tags: dict[str, str]
) -> ModelVersion:
    """Create a pending version, but only for an artifact that is stored and verifies.

    The version is created last: an interrupted upload leaves, at worst, an orphaned
    artifact, never a version without its artifact. Idempotent: an artifact registered
    before returns its version (a retry after a failure halfway never makes a second one).
    """
    model = checked_model(model)
    uri = artifact_uri.rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        stack.store.get_artifact(uri, Path(tmp))  # raises if absent or tampered
    with stack.locks.hold(model_lock(model)):
        for existing in stack.registry.list_versions(model):
            if existing.artifact_uri.rstrip("/") == uri:
                return existing
        return stack.registry.create_version(model, uri, metrics, tags)


def approve(stack: Stack, model: str, version: int, reason: str = "") -> ModelVersion:
    approved = stack.registry.set_status(checked_model(model), version, APPROVED, reason)
    tracking.mirror_status(stack, approved)
    return approved


def reject(stack: Stack, model: str, version: int, reason: str = "") -> ModelVersion:
    rejected = stack.registry.set_status(checked_model(model), version, REJECTED, reason)
    tracking.mirror_status(stack, rejected)
    return rejected


def deploy(
    stack: Stack, model: str, version: int | None = None, *, canary_weight: float | None = None
) -> Deployment:
    """Deploy a version (default: the newest approved one); only approved versions deploy.

    After the shift a smoke request goes through the endpoint's own entry point, pinned to the
    version just deployed; if it fails, the endpoint goes back to what it served before and
    SmokeTestError says why.
    """
    model = checked_model(model)
    with stack.locks.hold(model_lock(model)):
        if version is None:
            target = champion(stack, model)
            if target is None:
                raise NotFoundError(f"model {model!r} has no approved version to deploy")
        else:
            target = stack.registry.get_version(model, version)
            if target.status != APPROVED:
                raise TandemError(
                    f"{model} v{version} is {target.status}; only approved versions deploy"
                )
        return _shift(stack, target, canary_weight)


def promote_canary(stack: Stack, model: str) -> Deployment:
    """Send all traffic to the canary that is running for `model` (smoke-tested, as a deploy)."""
    model = checked_model(model)
    with stack.locks.hold(model_lock(model)):
        live = stack.endpoint.current(model)
        if live is None or live.canary_weight is None:
            raise TandemError(
                f"no canary is running for {model!r} on stack {stack.name!r}; "
                "start one with `tandem deploy MODEL VERSION --canary 0.1`"
            )
        return _shift(stack, stack.registry.get_version(model, live.version), None)


def rollback(stack: Stack, model: str, reason: str = "rolled back") -> Deployment:
    """Archive the live version and re-deploy the previous approved one. While a canary runs,
    rolling back archives the canary and gives all traffic back to its primary."""
    model = checked_model(model)
    with stack.locks.hold(model_lock(model)):
        live = stack.endpoint.current(model)
        if live is None:
            raise NotFoundError(f"model {model!r} is not deployed on stack {stack.name!r}")
        previous = [
            v
            for v in stack.registry.list_versions(model)
            if v.status == APPROVED and v.version < live.version
        ]
        primary = primary_version(live)
        if live.canary_weight is not None:
            previous = [v for v in previous if v.version == primary] or previous
        if not previous:
            raise NotFoundError(f"{model}: no approved version older than the live v{live.version}")
        deployment = _shift(stack, previous[-1], None)
        archived = stack.registry.set_status(model, live.version, ARCHIVED, reason)
        tracking.mirror_status(stack, archived)
        return deployment


SMOKE_SECONDS = 15.0  # how long a deploy waits for the endpoint to answer from the new version


class SmokeTestError(TandemError):
    """A deployed version failed its smoke request; the endpoint went back to what it served."""


def smoke_rows(card: dict[str, Any]) -> list[dict[str, Any]]:
    """One plausible request row from the model's input schema: the middle of each numeric
    feature's training range, the first known category of each categorical one."""
    row: dict[str, Any] = {}
    for feature in card["input_schema"]["features"]:
        if feature["type"] == "numeric":
            row[feature["name"]] = (feature["min"] + feature["max"]) / 2
        else:
            row[feature["name"]] = (feature.get("categories") or [None])[0]
    return [row]


def _shift(stack: Stack, target: ModelVersion, canary_weight: float | None) -> Deployment:
    """Point the endpoint at `target`, smoke-test it, and return to the previous state if the
    smoke request fails. The caller holds the model's lock."""
    before = stack.endpoint.current(target.model)
    deployment = stack.endpoint.deploy(target, canary_weight=canary_weight)
    try:
        _smoke(stack, target, "canary" if canary_weight is not None else "live")
    except TandemError as exc:
        why = f"{target.model} v{target.version} failed its smoke request ({exc})"
        if before is None:
            raise SmokeTestError(f"{why}; nothing was deployed before to return to") from None
        _restore(stack, before)
        raise SmokeTestError(
            f"{why}; the endpoint serves v{primary_version(before)} again"
        ) from None
    return deployment


def _smoke(stack: Stack, target: ModelVersion, route: str) -> None:
    """One request pinned to `route` must come back from `target` with one prediction. An
    endpoint may take a moment to pick up a change (a server reloads, an alias propagates):
    an answer from the version before, or "nothing loaded there yet" (a canary route before
    the reload), is asked again, up to SMOKE_SECONDS."""
    rows = smoke_rows(read_card(stack, target.artifact_uri))
    deadline = time.monotonic() + SMOKE_SECONDS
    while True:
        try:
            answer = stack.endpoint.invoke(target.model, rows, route=route)
        except NotFoundError:
            if time.monotonic() > deadline:
                raise
            answer = {}
        if answer.get("version") == target.version:
            break
        if time.monotonic() > deadline:
            raise TandemError(f"still answered by v{answer.get('version')} after {SMOKE_SECONDS}s")
        time.sleep(0.2)
    if len(answer.get("predictions") or []) != 1:
        raise TandemError(f"{len(answer.get('predictions') or [])} predictions for one row")


def _restore(stack: Stack, before: Deployment) -> None:
    """Point the endpoint back at what `before` served (its primary, then its canary)."""
    primary = stack.registry.get_version(before.model, primary_version(before))
    stack.endpoint.deploy(primary)
    if before.canary_weight is not None:
        canary = stack.registry.get_version(before.model, before.version)
        stack.endpoint.deploy(canary, canary_weight=before.canary_weight)


def same_stack(a: Stack, b: Stack) -> bool:
    return a.cloud == b.cloud and a.name == b.name


def promote(
    source: Stack,
    target: Stack,
    model: str,
    version: int | None = None,
    *,
    approve_in_target: bool = False,
) -> ModelVersion:
    """Copy an approved version to another stack (dev -> staging), keeping its lineage.

    The artifact is copied and verified first; the target's version is created last.
    Idempotent per source version: promoting it again returns the version made the first time.
    """
    model = checked_model(model)
    if same_stack(source, target):
        raise ConflictError(
            f"{model}: cannot promote from stack {source.name!r} to itself; name another stack"
        )
    mv = champion(source, model) if version is None else source.registry.get_version(model, version)
    if mv is None or mv.status != APPROVED:
        raise TandemError(
            f"{model}: only an approved version can be promoted (got {mv and mv.status})"
        )
    origin = f"{source.cloud}:{source.name}:{model}:v{mv.version}"
    with target.locks.hold(model_lock(model)):
        promoted = next(
            (
                v
                for v in target.registry.list_versions(model)
                if v.tags.get("promoted_from") == origin
            ),
            None,
        )
        if promoted is None:
            with tempfile.TemporaryDirectory() as tmp:
                local = source.store.get_artifact(mv.artifact_uri, Path(tmp) / "artifact")
                run_id = mv.tags.get("run_id") or f"{model}-v{mv.version}"
                uri = target.store.put_artifact(local, layout.artifact_key(model, run_id))
            lineage = {**mv.tags, "promoted_from": origin, "source_artifact_uri": mv.artifact_uri}
            promoted = register(target, model, uri, mv.metrics, lineage)
        if approve_in_target and promoted.status == PENDING:
            promoted = approve(target, model, promoted.version, f"promoted from {source.name}")
    return promoted


def pipeline(
    stack: Stack,
    spec: ModelSpec,
    *,
    auto_approve: bool = True,
    deploy_approved: bool = True,
    data_uri: str | None = None,
    progress: Progress | None = None,
) -> PipelineResult:
    """What CI runs: train, evaluate, register, then approve + deploy or reject.

    A failed gate registers the candidate as rejected (with every reason) and raises
    GateFailedError, so the champion stays deployed and CI stops with a non-zero exit.
    """
    _say(progress, f"training {spec.name}")
    outcome = train(stack, spec, data_uri=data_uri, progress=progress)
    version, report = submit(stack, spec, outcome, progress=progress)
    result = PipelineResult(spec, outcome, report, version)
    if not report.verdict.passed:
        raise GateFailedError(report.verdict, result)
    if auto_approve:
        result.version = approve(stack, spec.name, version.version, "all gates passed")
        if deploy_approved:
            _say(progress, f"deploying v{version.version}")
            result.deployment = deploy(stack, spec.name, version.version)
    return result


def submit(
    stack: Stack, spec: ModelSpec, outcome: TrainOutcome, *, progress: Progress | None = None
) -> tuple[ModelVersion, EvaluationReport]:
    """Evaluate a trained run and register it: pending if it passed, else rejected with reasons."""
    _say(progress, "evaluating against the gates")
    report = evaluate(stack, spec, outcome, progress=progress)
    tags = {
        "run_id": outcome.run_id,
        "data_hash": outcome.card["data"]["hash"],
        "code_version": outcome.card["code_version"],
        "gate": "passed" if report.verdict.passed else "failed",
    }
    version = register(stack, spec.name, outcome.artifact_uri, outcome.card["metrics"], tags)
    if not report.verdict.passed:
        version = reject(stack, spec.name, version.version, "; ".join(report.verdict.reasons))
    tracking.mirror_registration(outcome, version, report.verdict, stack_uri=stack.tracking_uri)
    return version, report


def load_run(stack: Stack, model: str, run_id: str) -> TrainOutcome:
    """A recorded run, with its artifact's model card (registering it verifies the artifact)."""
    model = checked_model(model)
    if "/" in run_id or run_id.startswith("."):
        raise NotFoundError(f"no run {run_id!r} of model {model!r} on stack {stack.name!r}")
    try:
        record = json.loads(stack.store.get_bytes(layout.run_key(model, run_id)))
    except NotFoundError:
        raise NotFoundError(
            f"no run {run_id!r} of model {model!r} on stack {stack.name!r}"
        ) from None
    uri = record["artifact_uri"].rstrip("/")
    return TrainOutcome(run_id, uri, read_card(stack, uri))


def read_card(stack: Stack, artifact_uri: str) -> dict[str, Any]:
    """The model card of a stored artifact (one small read, no download of the model)."""
    return json.loads(stack.store.get_bytes(f"{artifact_uri.rstrip('/')}/{artifact.CARD}"))
