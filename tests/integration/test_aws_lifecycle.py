"""The whole lifecycle through `ml.lifecycle` on AWS stacks built only from their outputs:
train -> evaluate -> register -> approve -> deploy -> a second version -> rollback ->
promote dev -> staging, in-process (moto.mock_aws) and over HTTP (ThreadedMotoServer).
Training runs the training image's real entry point (`deploy/training/entrypoint.py`)
inside `FakeTrainingContainer`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ml import artifact, lifecycle
from ml.cli import app
from ml.clouds import connect
from ml.clouds.base import Stack
from ml.spec import load_spec
from tests.conftest import CREDIT_SOURCE, write_spec
from tests.integration.aws_fixtures import (
    FakeTrainingContainer,
    client,
    create_stack,
    fake_credentials,
    moto_backend,
)

SMALL_MODEL = {"kind": "gradient_boosting", "params": {"n_estimators": 20, "max_depth": 2}}


@pytest.fixture(params=["in-process", "server"])
def endpoint_url(request, monkeypatch, tmp_path) -> Iterator[str | None]:
    fake_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("TANDEM_CODE_VERSION", "test-code-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_backend(request.param) as url:
        yield url


def live_alias(outputs: dict[str, Any], endpoint_url: str | None) -> dict[str, Any]:
    lam = client("lambda", endpoint_url)
    alias = lam.get_alias(FunctionName=outputs["endpoints"]["credit"]["function_name"], Name="live")
    conf = lam.get_function_configuration(
        FunctionName=outputs["endpoints"]["credit"]["function_name"],
        Qualifier=alias["FunctionVersion"],
    )
    published = lam.list_versions_by_function(
        FunctionName=outputs["endpoints"]["credit"]["function_name"]
    )["Versions"]
    return {
        "version": alias["FunctionVersion"],
        "model_uri": conf["Environment"]["Variables"].get("MODEL_URI"),
        "published": len(published),
    }


def test_full_lifecycle(endpoint_url: str | None, tmp_path: Path) -> None:
    dev_outputs = create_stack("dev", endpoint_url=endpoint_url)
    staging_outputs = create_stack("staging", endpoint_url=endpoint_url)
    dev: Stack = connect("aws", dev_outputs)
    staging: Stack = connect("aws", staging_outputs)
    container = FakeTrainingContainer(endpoint_url)
    dev.jobs.after_submit = container  # moto runs no training: the container stand-in does
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
    assert json.dumps(CREDIT_SOURCE) in spec.read_text()
    progress: list[str] = []

    # train -> evaluate -> register -> approve -> deploy
    first = lifecycle.pipeline(dev, load_spec(spec), progress=progress.append)
    assert first.report.verdict.passed and first.report.champion is None
    assert (first.version.version, first.version.status) == (1, "approved")
    uri1 = first.version.artifact_uri
    assert uri1.startswith(f"s3://{dev_outputs['models_bucket']}/artifacts/credit/")
    card = first.outcome.card
    assert card["environment"] == "sagemaker"
    assert card["data"]["uri"].startswith(f"s3://{dev_outputs['data_bucket']}/datasets/credit/")
    assert first.deployment is not None and first.deployment.version == 1
    live = live_alias(dev_outputs, endpoint_url)
    assert live["model_uri"] == uri1
    assert live["version"] == first.deployment.details["function_version"]
    runs = lifecycle.list_runs(dev, "credit")
    assert [r["artifact_uri"] for r in runs] == [uri1]
    assert runs[0]["job_id"] == card["run_id"]
    assert any("Completed" in line for line in progress)
    # Tandem's own image from the stack's repository, network-isolated, and the job ran
    # through the image's entry point (deploy/training/entrypoint.py)
    job = container.jobs[0]["job"]
    image = job["AlgorithmSpecification"]["TrainingImage"]
    assert image == dev_outputs["training_image_uri"]
    assert image.startswith(f"{dev_outputs['training_image_repository_url']}:")
    assert "/tandem-dev-training:" in image
    assert job["EnableNetworkIsolation"] is True
    assert "train: running ml/train.py --data_uri s3://" in container.jobs[0]["stderr"]

    # a second version: the champion is scored on the same rows, read back from S3
    second = lifecycle.pipeline(dev, load_spec(spec))
    assert second.report.champion_version == 1
    assert second.report.champion is not None
    assert second.report.champion.metrics == pytest.approx(first.report.candidate.metrics)
    assert (second.version.version, second.version.status) == (2, "approved")
    assert live_alias(dev_outputs, endpoint_url)["model_uri"] == second.version.artifact_uri
    published_before_rollback = live_alias(dev_outputs, endpoint_url)["published"]

    # rollback: the alias goes back to the Lambda version that served v1, v2 is archived
    back = lifecycle.rollback(dev, "credit", "p99 latency regression")
    assert back.version == 1 and back.details["published"] == "false"
    live = live_alias(dev_outputs, endpoint_url)
    assert live["version"] == first.deployment.details["function_version"]
    assert live["model_uri"] == uri1
    assert live["published"] == published_before_rollback
    statuses = [(v.version, v.status) for v in dev.registry.list_versions("credit")]
    assert statuses == [(1, "approved"), (2, "archived")]
    assert dev.registry.get_version("credit", 2).status_reason == "p99 latency regression"
    assert [d.version for d in dev.endpoint.history("credit")] == [1, 2, 1]
    assert dev.endpoint.current("credit").version == 1
    sagemaker = client("sagemaker", endpoint_url)
    group = dev_outputs["model_package_groups"]["credit"]
    approvals = {
        p["ModelPackageVersion"]: p["ModelApprovalStatus"]
        for p in sagemaker.list_model_packages(ModelPackageGroupName=group)[
            "ModelPackageSummaryList"
        ]
    }
    assert approvals == {1: "Approved", 2: "Rejected"}

    # promote dev -> staging: artifact copied and verified, a new version in staging's group
    promoted = lifecycle.promote(dev, staging, "credit", approve_in_target=True)
    assert (promoted.version, promoted.status) == (1, "approved")
    assert promoted.artifact_uri.startswith(f"s3://{staging_outputs['models_bucket']}/artifacts/")
    assert promoted.tags["promoted_from"] == "aws:dev:credit:v1"
    assert promoted.tags["source_artifact_uri"] == uri1
    assert promoted.metrics == first.version.metrics
    fetched = staging.store.get_artifact(promoted.artifact_uri, tmp_path / "staged")
    assert artifact.load(fetched).card["run_id"] == card["run_id"]
    staging_group = staging_outputs["model_package_groups"]["credit"]
    packages = sagemaker.list_model_packages(ModelPackageGroupName=staging_group)
    assert [p["ModelPackageVersion"] for p in packages["ModelPackageSummaryList"]] == [1]
    deployed = lifecycle.deploy(staging, "credit")
    assert deployed.endpoint == staging_outputs["endpoints"]["credit"]["url"]
    assert live_alias(staging_outputs, endpoint_url)["model_uri"] == promoted.artifact_uri
    assert live_alias(dev_outputs, endpoint_url)["model_uri"] == uri1  # dev untouched
    # the staging stack never ran a job: the training container ran twice, for dev
    assert len(container.jobs) == 2

    # the CLI as a user runs it, connected from the stack's outputs file alone
    outputs_file = tmp_path / "dev.json"
    outputs_file.write_text(json.dumps(dev_outputs))
    aws_cli = ["--cloud", "aws", "--stack", "dev", "--outputs", str(outputs_file), "--json"]
    listed = CliRunner().invoke(app, [*aws_cli, "models", "credit"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert [(v["version"], v["status"]) for v in json.loads(listed.output)] == statuses
    redeploy = CliRunner().invoke(app, [*aws_cli, "deploy", "credit", "2"])
    assert redeploy.exit_code == 1 and "archived; only approved versions deploy" in redeploy.output
