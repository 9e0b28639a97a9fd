"""The whole lifecycle on the local stack: train, gate, register, deploy, roll back, promote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ml import artifact, datasets, lifecycle
from ml.clouds.base import APPROVED, ARCHIVED, PENDING, REJECTED, Stack
from ml.errors import ArtifactIntegrityError, GateFailedError, NotFoundError, TandemError
from ml.spec import load_spec


def installed_model_bytes(stack: Stack, model: str) -> bytes:
    live = stack.endpoint.current(model)
    assert live is not None
    directory = Path(live.details["path"])
    artifact.verify(directory)
    return (directory / artifact.ONNX).read_bytes()


def test_pipeline_deploy_rollback_promote(
    local_stack: Stack, make_stack: Callable[[str], Stack], spec_writer, tmp_path: Path
) -> None:
    spec = load_spec(spec_writer())  # loaded once, at the edge, as the CLI does
    lines: list[str] = []

    first = lifecycle.pipeline(local_stack, spec, progress=lines.append)
    assert first.version.version == 1
    assert first.version.status == APPROVED
    assert first.report.verdict.passed and first.report.champion is None
    assert first.deployment is not None and first.deployment.version == 1
    assert any("training credit" in line for line in lines)
    v1_onnx = installed_model_bytes(local_stack, "credit")

    second = lifecycle.pipeline(local_stack, spec)
    assert second.version.version == 2
    assert second.report.champion_version == 1
    # the champion was scored on the challenger's own holdout rows: same data, same model
    assert second.report.champion.metrics["roc_auc"] == pytest.approx(
        second.report.candidate.metrics["roc_auc"], abs=1e-9
    )
    assert second.report.champion.rows == second.outcome.card["data"]["test_rows"]
    assert local_stack.endpoint.current("credit").version == 2
    assert lifecycle.champion(local_stack, "credit").version == 2

    back = lifecycle.rollback(local_stack, "credit", reason="latency regression")
    assert back.version == 1
    assert local_stack.endpoint.current("credit").version == 1
    assert installed_model_bytes(local_stack, "credit") == v1_onnx
    v2 = local_stack.registry.get_version("credit", 2)
    assert (v2.status, v2.status_reason) == (ARCHIVED, "latency regression")
    assert local_stack.registry.get_version("credit", 1).status == APPROVED
    assert [d.version for d in local_stack.endpoint.history("credit")] == [1, 2, 1]
    with pytest.raises(NotFoundError, match="no approved version older than the live v1"):
        lifecycle.rollback(local_stack, "credit")
    with pytest.raises(TandemError, match="archived; only approved versions deploy"):
        lifecycle.deploy(local_stack, "credit", 2)

    # promote dev -> staging: the champion (v1, since v2 is archived) with its lineage
    staging = make_stack("staging")
    promoted = lifecycle.promote(local_stack, staging, "credit")
    assert promoted.version == 1 and promoted.status == PENDING
    assert promoted.tags["promoted_from"] == "local:dev:credit:v1"
    assert promoted.tags["run_id"] == first.outcome.run_id
    assert promoted.tags["data_hash"] == first.outcome.card["data"]["hash"]
    assert promoted.tags["code_version"] == "test-code-1"
    assert promoted.tags["source_artifact_uri"] == first.version.artifact_uri
    assert promoted.metrics == first.version.metrics
    assert promoted.artifact_uri != first.version.artifact_uri  # staging's own store
    assert promoted.artifact_uri.startswith(Path(staging.outputs["root"]).as_uri())
    fetched = staging.store.get_artifact(promoted.artifact_uri, tmp_path / "from-staging")
    loaded = artifact.load(fetched)
    assert loaded.card["run_id"] == first.outcome.run_id
    assert (fetched / artifact.ONNX).read_bytes() == v1_onnx
    # promotion is idempotent per source version: the same staging version, now approved
    again = lifecycle.promote(local_stack, staging, "credit", 1, approve_in_target=True)
    assert (again.version, again.status) == (1, APPROVED)
    assert [v.version for v in staging.registry.list_versions("credit")] == [1]
    with pytest.raises(TandemError, match="only an approved version can be promoted"):
        lifecycle.promote(local_stack, staging, "credit", 2)

    runs = lifecycle.list_runs(local_stack, "credit")
    assert [r["run_id"] for r in runs] == [first.outcome.run_id, second.outcome.run_id]
    for run, result in zip(runs, (first, second), strict=True):
        assert run["params"]["n_estimators"] == 30
        assert run["metrics"] == result.outcome.card["metrics"]
        assert run["data_hash"] == result.outcome.card["data"]["hash"]
        assert run["data_hash"].startswith("sha256:")
        assert run["code_version"] == "test-code-1"
        assert run["artifact_uri"] == result.version.artifact_uri
        assert run["environment"] == "local"
        assert local_stack.store.get_bytes(run["logs_uri"])  # the job's log was kept
    assert lifecycle.list_runs(staging) == []


def test_gate_blocks_a_worse_challenger(local_stack: Stack, spec_writer) -> None:
    champion = lifecycle.pipeline(local_stack, load_spec(spec_writer()))
    live_before = local_stack.endpoint.current("credit")
    assert live_before.version == 1

    # one feature with no signal: the only gate left is the champion check, and it must block
    worse = load_spec(
        spec_writer(
            "worse.toml",
            features=[{"name": "credit_lines", "type": "numeric"}],
            gates={"primary_metric": "roc_auc", "min_improvement": 0.0},
        )
    )
    with pytest.raises(GateFailedError) as info:
        lifecycle.pipeline(local_stack, worse)

    verdict = info.value.verdict
    assert not verdict.passed
    assert [c.name for c in verdict.checks if not c.passed] == ["champion"]
    (reason,) = verdict.reasons
    assert reason.startswith("roc_auc ") and "vs champion" in reason
    assert str(info.value) == f"gate failed: {reason}"
    report = info.value.result.report
    assert report.champion_version == 1
    # the champion was scored with its own features on the challenger's holdout rows
    assert report.champion.metrics["roc_auc"] == pytest.approx(
        champion.outcome.card["metrics"]["roc_auc"], abs=1e-9
    )
    assert report.candidate.metrics["roc_auc"] < report.champion.metrics["roc_auc"] - 0.1

    rejected = local_stack.registry.get_version("credit", 2)
    assert rejected.status == REJECTED
    assert reason in rejected.status_reason
    assert info.value.result.version == rejected
    assert local_stack.endpoint.current("credit") == live_before
    assert len(local_stack.endpoint.history("credit")) == 1
    assert lifecycle.champion(local_stack, "credit").version == 1
    with pytest.raises(TandemError, match="rejected; only approved versions deploy"):
        lifecycle.deploy(local_stack, "credit", 2)


def test_register_refuses_an_incomplete_artifact(
    local_stack: Stack, trained_artifact: Path
) -> None:
    store = local_stack.store
    uri = store.put_artifact(trained_artifact, "artifacts/credit/run-1")
    (store.root / "artifacts" / "credit" / "run-1" / artifact.BASELINE).unlink()
    with pytest.raises(ArtifactIntegrityError, match=r"baseline\.json"):
        lifecycle.register(local_stack, "credit", uri, {"roc_auc": 0.8}, {})
    with pytest.raises(NotFoundError):
        lifecycle.register(local_stack, "credit", store.uri_for("artifacts/credit/absent"), {}, {})
    assert local_stack.registry.list_versions("credit") == []
    # the counter did not move: the first good registration is still v1
    good = store.put_artifact(trained_artifact, "artifacts/credit/run-2")
    assert lifecycle.register(local_stack, "credit", good, {}, {}).version == 1


def test_data_the_job_would_refuse_starts_no_job_and_creates_no_version(
    local_stack: Stack, spec_writer, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    datasets.credit(rows=100, seed=1).drop(columns=["income"]).to_csv(bad, index=False)
    with pytest.raises(TandemError, match=r"missing column\(s\) \['income'\]") as refused:
        lifecycle.pipeline(local_stack, load_spec(spec_writer()), data_uri=str(bad))
    assert "training job" not in str(refused.value)  # checked before any job started
    assert local_stack.registry.list_versions("credit") == []
    assert lifecycle.list_runs(local_stack, "credit") == []
    assert local_stack.endpoint.current("credit") is None
    assert local_stack.store.list_keys("artifacts/credit/") == []  # no job, so no job log


def test_deploy_of_a_pending_version_is_refused(local_stack: Stack, trained_artifact: Path) -> None:
    uri = local_stack.store.put_artifact(trained_artifact, "artifacts/credit/run-1")
    pending = lifecycle.register(local_stack, "credit", uri, {"roc_auc": 0.8}, {"run_id": "run-1"})
    assert pending.status == PENDING
    with pytest.raises(TandemError, match="credit v1 is pending; only approved versions deploy"):
        lifecycle.deploy(local_stack, "credit", 1)
    with pytest.raises(NotFoundError, match="no approved version to deploy"):
        lifecycle.deploy(local_stack, "credit")
    with pytest.raises(NotFoundError, match="not deployed"):
        lifecycle.rollback(local_stack, "credit")
    assert local_stack.endpoint.current("credit") is None

    lifecycle.approve(local_stack, "credit", 1, "reviewed")
    deployed = lifecycle.deploy(local_stack, "credit")
    assert deployed.version == 1
    assert lifecycle.deploy(local_stack, "credit", 1) == deployed  # idempotent
    assert len(local_stack.endpoint.history("credit")) == 1
    served = artifact.load(Path(deployed.details["path"]))
    assert served.model.predict(
        [{"age": 40, "income": 30000.0, "debt_ratio": 0.4, "late_payments": 0, "credit_lines": 3,
          "employment": "salaried"}]
    )[0]["label"] in (0, 1)  # fmt: skip
