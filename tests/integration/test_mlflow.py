"""MLflow tracking against a real MLflow server on loopback (tests/integration/mlflow_server.py):
a pipeline run mirrored completely, its model loadable with mlflow.pyfunc and scoring as
Tandem's inference core does, and a server that is down costing one warning, not the model."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

from deploy.inference import Model  # noqa: E402
from infra.aws import policies  # noqa: E402
from ml import data, lifecycle, tracking  # noqa: E402
from ml.clouds.base import APPROVED, ARCHIVED, PENDING, REJECTED  # noqa: E402
from ml.errors import ConfigError  # noqa: E402
from ml.spec import load_spec  # noqa: E402
from tests.conftest import CREDIT_ROW, CREDIT_SOURCE  # noqa: E402
from tests.integration.iam_eval import ALLOW, IMPLICIT_DENY, evaluate  # noqa: E402
from tests.integration.mlflow_server import (  # noqa: E402
    free_port,
    mlflow_server,  # noqa: F401 (a fixture)
    rest_calls,
)


@pytest.fixture(autouse=True)
def fresh_tracking(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Each test in its own working directory (to see that nothing lands in ./mlruns), with
    no failure remembered from another test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "_failed", set())
    for key in tracking.HTTP_BOUNDS:
        monkeypatch.delenv(key, raising=False)


def test_pipeline_run_is_mirrored_with_a_loadable_model(
    mlflow_server: str,  # noqa: F811 (the fixture imported above)
    monkeypatch,
    local_stack,
    spec_writer,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv(tracking.REGISTRY_ENV, "1")
    spec = load_spec(spec_writer())
    with warnings.catch_warnings():
        warnings.simplefilter("error", tracking.TrackingWarning)
        result = lifecycle.pipeline(local_stack, spec)
    assert result.version.version == 1 and result.version.status == APPROVED
    card = result.outcome.card

    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("credit")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`tandem.run_id` = '{result.outcome.run_id}'"
    )
    assert len(runs) == 1, "the job logs the run; the lifecycle finds it, never a second one"
    run = runs[0]
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    expected_params = {
        "spec.name": "credit",
        "spec.target": "default",
        "spec.split.seed": "42",
        "spec.split.test_size": "0.25",
        "spec.estimator.params.n_estimators": "30",
        "task": "binary",
        "estimator.kind": "gradient_boosting",
        "estimator.max_depth": "2",
        "data.uri": CREDIT_SOURCE,
        "data.hash": card["data"]["hash"],
        "data.test_rows": str(card["data"]["test_rows"]),
    }
    assert {k: params.get(k) for k in expected_params} == expected_params
    assert '"name":"employment"' in params["spec.features"]
    assert metrics["roc_auc"] == pytest.approx(card["metrics"]["roc_auc"])
    expected_tags = {
        "tandem.run_id": result.outcome.run_id,
        "tandem.data_hash": card["data"]["hash"],
        "tandem.code_version": "test-code-1",
        "tandem.artifact_uri": result.outcome.artifact_uri,
        "tandem.gate": "passed",
        "tandem.version": "1",
        "tandem.registered_status": "pending",
    }
    assert {k: tags.get(k) for k in expected_tags} == expected_tags

    mirrored = client.search_model_versions(f"name='credit' and run_id='{run.info.run_id}'")
    assert [v.tags.get("tandem.version") for v in mirrored] == ["1"]

    # the logged model scores as Tandem's inference core does, on the same rows
    frame = data.validate(data.load_frame(CREDIT_SOURCE), spec).head(200)
    features = frame[spec.feature_names].reset_index(drop=True)
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    answer = loaded.predict(features)
    core = Model.load(local_stack.store.get_artifact(result.outcome.artifact_uri, tmp_path / "a"))
    expected = core.predict_proba(core.feeds_from_columns({c: features[c] for c in features}))
    positive = str(card["classes"][-1])
    np.testing.assert_allclose(answer[positive].to_numpy(), expected, rtol=0, atol=1e-6)
    # request rows as people write them: integers, and missing values of both kinds
    rows = [CREDIT_ROW, {**CREDIT_ROW, "age": None, "employment": None}]
    answer = loaded.predict(pd.DataFrame(rows))
    expected = [p["probability"] for p in core.predict(rows)]
    np.testing.assert_allclose(answer[positive].to_numpy(), expected, rtol=0, atol=1e-6)
    assert not (tmp_path / "mlruns").exists(), "artifacts went to the server, not ./mlruns"


def test_unreachable_server_costs_one_warning_not_the_model(
    monkeypatch, local_stack, spec_writer
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    spec = load_spec(spec_writer())
    with pytest.warns(tracking.TrackingWarning) as caught:
        result = lifecycle.pipeline(local_stack, spec)
    assert result.version.version == 1 and result.version.status == APPROVED
    assert local_stack.endpoint.current("credit").version == 1
    messages = [str(w.message) for w in caught if w.category is tracking.TrackingWarning]
    assert len(messages) == 1, messages
    assert down in messages[0] and result.outcome.run_id in messages[0]


@pytest.mark.parametrize("uri", ["file:./mlruns", "./mlruns", "/tmp/mlruns"])
def test_a_file_store_uri_is_refused_before_training(
    uri: str, monkeypatch, local_stack, spec_writer
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    spec = load_spec(spec_writer())
    with pytest.raises(ConfigError, match="refuses the file store"):
        lifecycle.train(local_stack, spec)
    assert lifecycle.list_runs(local_stack) == []


def _mirrored(client, model: str) -> dict[int, tuple[str, str | None]]:
    """{Tandem version: (MLflow version, its tandem.status tag)} in MLflow's registry."""
    return {
        int(v.tags["tandem.version"]): (v.version, v.tags.get("tandem.status"))
        for v in client.search_model_versions(f"name='{model}'")
    }


def _champion(client, model: str) -> str | None:
    return client.get_registered_model(model).aliases.get(tracking.CHAMPION_ALIAS)


def test_registry_states_are_mirrored_with_a_champion_alias(
    mlflow_server: str,  # noqa: F811 (the fixture imported above)
    monkeypatch,
    local_stack,
    spec_writer,
) -> None:
    """Approve, a second approval, reject, rollback: each one's tag and the alias follow,
    on the stack's own tracking server (MLFLOW_TRACKING_URI unset)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(tracking.REGISTRY_ENV, "1")
    stack = dataclasses.replace(local_stack, tracking_uri=mlflow_server)
    spec = load_spec(spec_writer(name="scoring"))
    client = mlflow.MlflowClient(mlflow_server)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tracking.TrackingWarning)
        first = lifecycle.pipeline(stack, spec)  # approve + deploy v1
        mirrored = _mirrored(client, "scoring")
        assert mirrored[1][1] == APPROVED
        assert _champion(client, "scoring") == mirrored[1][0]

        lifecycle.pipeline(stack, spec)  # v2 approved + deployed
        mirrored = _mirrored(client, "scoring")
        assert [mirrored[n][1] for n in (1, 2)] == [APPROVED, APPROVED]
        assert _champion(client, "scoring") == mirrored[2][0], "the alias moved to v2"

        outcome = lifecycle.train(stack, spec)
        third, _ = lifecycle.submit(stack, spec, outcome)
        assert _mirrored(client, "scoring")[3][1] == PENDING
        lifecycle.reject(stack, "scoring", third.version, "not this one")
        assert _mirrored(client, "scoring")[3][1] == REJECTED
        assert _champion(client, "scoring") == mirrored[2][0], "a rejection moves no alias"

        lifecycle.rollback(stack, "scoring")  # archives v2, serves v1 again
        mirrored = _mirrored(client, "scoring")
        assert mirrored[2][1] == ARCHIVED
        assert _champion(client, "scoring") == mirrored[1][0], "back on v1"
    assert first.version.version == 1


def test_a_state_change_with_the_server_down_costs_one_warning(
    mlflow_server: str,  # noqa: F811 (the fixture imported above)
    monkeypatch,
    local_stack,
    spec_writer,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv(tracking.REGISTRY_ENV, "1")
    spec = load_spec(spec_writer(name="downtime"))
    first, second = (
        lifecycle.submit(local_stack, spec, lifecycle.train(local_stack, spec))[0] for _ in range(2)
    )
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    with pytest.warns(tracking.TrackingWarning) as caught:
        approved = lifecycle.approve(local_stack, "downtime", first.version)
        rejected = lifecycle.reject(local_stack, "downtime", second.version, "not this one")
    assert (approved.status, rejected.status) == (APPROVED, REJECTED)
    assert local_stack.registry.get_version("downtime", first.version).status == APPROVED
    messages = [str(w.message) for w in caught if w.category is tracking.TrackingWarning]
    assert len(messages) == 1 and down in messages[0], messages
    # the server holds what the registrations left: nothing half-written, no alias yet
    client = mlflow.MlflowClient(mlflow_server)
    assert {n: s for n, (_, s) in _mirrored(client, "downtime").items()} == {
        1: PENDING,
        2: PENDING,
    }
    assert _champion(client, "downtime") is None


def _rpc_names() -> list[tuple[str, re.Pattern[str], str]]:
    """(HTTP method, path pattern, RPC name) of every MLflow REST endpoint, from MLflow's own
    protos: the names SageMaker's `sagemaker-mlflow:<Rpc>` actions follow."""
    from mlflow.protos import databricks_pb2, model_registry_pb2, service_pb2

    table = []
    for module in (service_pb2, model_registry_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                for endpoint in method.GetOptions().Extensions[databricks_pb2.rpc].endpoints:
                    path = re.sub(r"\{[^}]+\}", "[^/]+", endpoint.path)
                    pattern = re.compile(rf"/api/\d+\.\d+{path}")
                    name = method.name[0].upper() + method.name[1:]
                    table.append((endpoint.method, pattern, name))
    return table


def test_the_mirrors_calls_are_exactly_what_the_roles_may_call(
    mlflow_server: str,  # noqa: F811 (the fixture imported above)
    monkeypatch,
    local_stack,
    spec_writer,
) -> None:
    """Every MLflow REST call a whole lifecycle makes (log, register, approve, a second
    approval, rollback with the alias removed) maps to an action that the CI role's policy
    allows on the stack's tracking server (infra/aws/policies/mlflow.py), and every action
    granted is used. Artifacts (mlflow-artifacts/) do not count: on SageMaker the client
    writes them to S3 itself."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stack = dataclasses.replace(local_stack, tracking_uri=mlflow_server)
    spec = load_spec(spec_writer(name="audited"))
    _, since = rest_calls(mlflow_server)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tracking.TrackingWarning)
        lifecycle.pipeline(stack, spec)  # v1: logged, not in MLflow's registry
        monkeypatch.setenv(tracking.REGISTRY_ENV, "1")
        lifecycle.pipeline(stack, spec)  # v2: registered, approved, the champion
        lifecycle.rollback(stack, "audited")  # v2 archived; v1 is not mirrored: no champion
    calls, _ = rest_calls(mlflow_server, since)
    table = _rpc_names()
    seen = set()
    for method, path in calls:
        if "/mlflow-artifacts/" in path:
            continue
        names = [n for m, p, n in table if m == method and p.fullmatch(path)]
        assert names, f"{method} {path}: no MLflow RPC"
        seen.add(names[0])
    unmapped = seen - set(policies.MIRROR_CALLS)
    assert not unmapped, f"MLflow calls with no granted action: {sorted(unmapped)}"
    # polled only while SageMaker registers a version (a local server answers READY at once)
    assert set(policies.MIRROR_CALLS) - seen == {"GetModelVersion"}

    server = policies.mlflow_tracking_server_arn("us-east-1", "123456789012", "tandem-dev-mlflow")
    policy = policies.ci_deploy_policy(
        region="us-east-1",
        account_id="123456789012",
        data_bucket="tandem-dev-data",
        models_bucket="tandem-dev-models",
        kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/k",
        sagemaker_role_arn="arn:aws:iam::123456789012:role/tandem-dev-sagemaker",
        model_package_group_arns=["arn:aws:sagemaker:us-east-1:123456789012:model-package-group/g"],
        function_names=["tandem-dev-audited"],
        name_prefix="tandem-dev",
        pseudonym_secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:s",
        mlflow_tracking_server_arn=server,
    )
    for name in sorted(seen):
        action = policies.MIRROR_CALLS[name]
        assert evaluate([policy], action, server) == ALLOW, f"{name} -> {action}"
        other = server.replace("tandem-dev-mlflow", "tandem-prod-mlflow")
        assert evaluate([policy], action, other) == IMPLICIT_DENY, f"{action} on {other}"
    assert evaluate([policy], "sagemaker-mlflow:AccessUI", server) == IMPLICIT_DENY
