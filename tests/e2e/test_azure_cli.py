"""The lifecycle on Azure as a user runs it: `tandem --cloud azure --outputs FILE ...`, the
adapter built from the stack outputs file alone, offline (Blob on Azurite, the rest on the
HTTPS fake of tests/azure_fakes.py, each function app the real deploy/azure_functions/).
Then promotions across clouds: AWS (moto) → Azure → AWS, through one stack file holding
both clouds' outputs, as a stack with `tandem:clouds: [aws, azure]` exports them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from contract.outputs import AZURE_IN_DUAL_STACK
from ml.clouds import connect
from ml.clouds.base import APPROVED
from ml.clouds.outputs import read_outputs
from tests.azure_stack import emulated
from tests.conftest import BASE_SPEC, CREDIT_SOURCE
from tests.e2e.conftest import small_spec
from tests.integration.aws_fixtures import create_stack, fake_credentials, moto_backend


@pytest.fixture
def azure_files(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`dev.json` and `staging.json`: two Azure stacks' outputs, as `pulumi stack output
    --json` writes them (plus the emulators' addresses); the fakes by stack name."""
    monkeypatch.setenv("TANDEM_CODE_VERSION", "e2e-1")
    with ExitStack() as running:
        fakes = {}
        for name in ("dev", "staging"):
            outputs, fakes[name] = running.enter_context(
                emulated(azurite, name, tmp_path / f"fake-{name}")
            )
            (tmp_path / f"{name}.json").write_text(json.dumps(outputs))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fakes["dev"].ca_bundle))
        yield tmp_path / "dev.json", tmp_path / "staging.json", fakes


def rows_file(tmp_path: Path, count: int) -> Path:
    from ml import data

    names = [f["name"] for f in BASE_SPEC["features"]]
    rows = data.load_frame(CREDIT_SOURCE).head(count)[names].to_json(orient="records")
    path = tmp_path / "rows.json"
    path.write_text(rows)
    return path


def test_the_whole_lifecycle_on_azure_from_outputs_files(cli, azure_files, tmp_path):
    dev, staging, fakes = azure_files
    on_dev = ("--cloud", "azure", "--outputs", str(dev), "--json")
    spec = small_spec(tmp_path, "synthetic://credit?rows=1500&seed=3")

    # train → gates → register → approve → deploy, twice: Azure ML numbers the versions
    first = json.loads(cli(*on_dev, "pipeline", str(spec)).stdout)
    assert (first["version"], first["status"], first["deployed"]) == (1, APPROVED, 1)
    second = json.loads(cli(*on_dev, "pipeline", str(spec)).stdout)
    assert second["deployed"] == 2
    # each ran as an Azure ML command job on the stack's compute, as its training identity
    outputs = json.loads(dev.read_text())
    names = fakes["dev"].job_names()
    assert len(names) == 2 and all(first["run_id"] in n or second["run_id"] in n for n in names)
    for name in names:
        job = fakes["dev"].job(name)
        assert job["properties"]["status"] == "Completed"
        assert job["properties"]["computeId"].endswith(f"/computes/{outputs['compute_name']}")
        assert outputs["training_identity_client_id"] in json.dumps(job["properties"]["identity"])
    app = outputs["endpoints"]["credit"]["function_app"]
    assert fakes["dev"].app_settings(app)["MODEL_VERSION"] == "2"  # what the deploy wrote

    # rollback: v2 archived, v1 served again, read back from the function app's settings
    back = cli(*on_dev, "rollback", "credit")
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["version"] == 1
    assert fakes["dev"].app_settings(app)["MODEL_VERSION"] == "1"

    # a third version as a canary beside v1, scored through the function, then promoted
    third = json.loads(cli(*on_dev, "pipeline", str(spec), "--no-deploy").stdout)
    assert third["version"] == 3 and third["status"] == APPROVED
    canary = cli(*on_dev, "deploy", "credit", "3", "--canary", "0.25")
    assert canary.exit_code == 0, canary.output
    versions = {v["version"]: v for v in json.loads(cli(*on_dev, "models", "credit").stdout)}
    assert versions[1]["live"] and versions[3]["canary_weight"] == 0.25
    assert versions[2]["status"] == "archived"
    pinned = json.loads(
        cli(*on_dev, "predict", "credit", str(rows_file(tmp_path, 3)), "--route", "canary").output
    )
    assert pinned["version"] == 3 and len(pinned["predictions"]) == 3
    promoted = cli(*on_dev, "deploy", "credit", "--promote-canary")
    assert promoted.exit_code == 0, promoted.output
    assert fakes["dev"].app_settings(app)["MODEL_VERSION"] == "3"
    assert "CANARY_MODEL_URI" not in fakes["dev"].app_settings(app)

    # promote dev → staging, with its lineage, into staging's own storage account
    moved = cli(*on_dev, "promote", "credit", "--to", "staging", "--to-outputs", str(staging))
    assert moved.exit_code == 0, moved.output
    copy = json.loads(moved.stdout)
    assert copy["version"] == 1 and copy["tags"]["promoted_from"] == "azure:dev:credit:v3"
    assert copy["tags"]["run_id"] == third["run_id"]
    staging_outputs = json.loads(staging.read_text())
    assert copy["artifact_uri"].startswith(staging_outputs["endpoint_url"])
    assert "-staging-models/" in copy["artifact_uri"]
    assert all(fake.unanswered() == [] for fake in fakes.values())


@pytest.fixture
def clouds(azure_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`aws-dev.json` (an AWS stack on moto) and `staging.json` rewritten as a stack with
    both clouds: the AWS staging outputs at the top, the Azure ones under `azure`."""
    _, staging, _ = azure_files
    fake_credentials(monkeypatch, tmp_path)
    with moto_backend("in-process"):
        aws_dev = tmp_path / "aws-dev.json"
        aws_dev.write_text(json.dumps(create_stack("dev")))
        both = create_stack("staging") | {AZURE_IN_DUAL_STACK: json.loads(staging.read_text())}
        staging.write_text(json.dumps(both))
        yield aws_dev, staging


def test_promotion_crosses_clouds_and_back(cli, clouds, trained_artifact, tmp_path):
    aws_dev, staging = clouds
    source = connect("aws", json.loads(aws_dev.read_text()))
    uri = source.store.put_artifact(trained_artifact, "artifacts/credit/run-aws-1")
    made = source.registry.create_version("credit", uri, {"roc_auc": 0.81}, {"run_id": "run-aws-1"})
    source.registry.set_status("credit", made.version, APPROVED, "gates passed")

    there = cli(
        "--json", "promote", "credit", "--from", "aws:dev", "--from-outputs", str(aws_dev),
        "--to", "azure:staging", "--to-outputs", str(staging), "--approve",
    )  # fmt: skip
    assert there.exit_code == 0, there.output
    on_azure = json.loads(there.stdout)
    assert on_azure["tags"]["promoted_from"] == f"aws:dev:credit:v{made.version}"
    assert on_azure["tags"]["run_id"] == "run-aws-1" and on_azure["status"] == APPROVED
    assert on_azure["metrics"] == {"roc_auc": 0.81}
    assert on_azure["artifact_uri"].startswith("http")  # a blob of the Azure half

    back = cli(
        "--json", "--cloud", "azure", "--stack", "staging", "--outputs", str(staging),
        "promote", "credit", "--to", "aws:staging", "--to-outputs", str(staging),
    )  # fmt: skip
    assert back.exit_code == 0, back.output
    on_aws = json.loads(back.stdout)
    assert on_aws["tags"]["promoted_from"] == f"azure:staging:credit:v{on_azure['version']}"
    assert on_aws["tags"]["run_id"] == "run-aws-1"
    assert on_aws["artifact_uri"].startswith("s3://tandem-staging")
    # the artifact arrived whole: the AWS copy loads and verifies
    target = connect("aws", read_outputs("aws", "staging", staging))
    copied = target.store.get_artifact(on_aws["artifact_uri"], tmp_path / "back")
    assert (copied / "MANIFEST.json").is_file()

    again = cli(
        "--json", "promote", "credit", "--from", "aws:dev", "--from-outputs", str(aws_dev),
        "--to", "azure:staging", "--to-outputs", str(staging),
    )  # fmt: skip
    assert json.loads(again.stdout)["version"] == on_azure["version"]  # a retry: no duplicate


def test_stderr_holds_tandems_words_only(azure_files, tmp_path):
    """As a user runs it (a process of its own: no test logging in between): azure-ai-ml
    announces its experimental classes and each failed lookup on the root logger, and
    azure-identity every credential it tried; none of it reaches the user."""
    dev, _, _ = azure_files
    # a connection made in this process first: azure-ai-ml records the (emulator's) cloud in
    # the environment, which a child process would inherit and fail to import azure-ai-ml with
    before = dict(os.environ)
    connect("azure", json.loads(dev.read_text()))
    assert dict(os.environ) == before
    tandem = [sys.executable, "-m", "ml", "--cloud", "azure", "--outputs", str(dev), "--json"]
    spec = small_spec(tmp_path, "synthetic://credit?rows=600&seed=3")
    trained = subprocess.run([*tandem, "train", str(spec)], capture_output=True, text=True)
    assert trained.returncode == 0 and trained.stderr == "", trained.stderr
    assert json.loads(trained.stdout)["run_id"]
    missing = subprocess.run([*tandem, "approve", "credit", "7"], capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr == "", missing.stderr
    assert json.loads(missing.stdout)["type"] == "NotFoundError"
