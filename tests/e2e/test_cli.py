"""The `tandem` CLI as a user (or a CI stage) runs it: exit codes, --json output, tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.e2e.conftest import EXAMPLES, small_spec


def test_pipeline_json_then_models_runs_and_rollback(cli, tmp_path):
    spec = small_spec(tmp_path, "synthetic://credit?rows=1500&seed=3")
    first = cli("--json", "pipeline", str(spec))
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert summary["version"] == 1 and summary["status"] == "approved" and summary["deployed"] == 1
    assert summary["gate"]["passed"] is True
    report = Path(summary["report"])
    assert report.is_file() and "data:image/png;base64," in report.read_text()

    second = json.loads(cli("--json", "pipeline", str(spec)).output)
    assert second["deployed"] == 2

    versions = json.loads(cli("--json", "models", "credit").output)
    assert [(v["version"], v["status"]) for v in versions] == [(1, "approved"), (2, "approved")]
    assert [v["live"] for v in versions] == [False, True]
    runs = json.loads(cli("--json", "runs", "credit").output)
    assert {r["run_id"] for r in runs} == {summary["run_id"], second["run_id"]}

    back = cli("--json", "rollback", "credit")
    assert back.exit_code == 0 and json.loads(back.output)["version"] == 1
    versions = json.loads(cli("--json", "models", "credit").output)
    assert [(v["status"], v["live"]) for v in versions] == [("approved", True), ("archived", False)]
    table = cli("models")
    assert "archived" in table.output and "●" in table.output


def test_pipeline_exits_nonzero_at_a_failed_gate_and_keeps_the_champion(cli, tmp_path):
    good = small_spec(tmp_path, "synthetic://credit?rows=1500&seed=3")
    assert cli("pipeline", str(good)).exit_code == 0
    weak = (
        (EXAMPLES / "credit_weak.toml")
        .read_text()
        .replace(
            "synthetic://credit?rows=4000&seed=7&shift=0.0", "synthetic://credit?rows=1500&seed=3"
        )
    )
    (tmp_path / "weak.toml").write_text(weak)
    blocked = cli("--json", "pipeline", str(tmp_path / "weak.toml"))
    assert blocked.exit_code == 1
    # ONE document: the run's summary, with the error keys every --json error carries
    summary = json.loads(blocked.stdout)
    assert summary["status"] == "rejected" and not summary["gate"]["passed"]
    assert any("vs champion" in reason for reason in summary["gate"]["reasons"])
    assert summary["type"] == "GateFailedError" and summary["error"].startswith("gate failed: ")
    assert Path(summary["report"]).is_file()
    live = json.loads(cli("--json", "models", "credit").output)
    assert [v["status"] for v in live] == ["approved", "rejected"]


def test_train_evaluate_register_approve_deploy_step_by_step(cli, tmp_path):
    spec = small_spec(tmp_path, "synthetic://credit?rows=1200&seed=5")
    trained = json.loads(cli("--json", "train", str(spec)).output)
    run_id = trained["run_id"]
    assert cli("evaluate", str(spec), run_id).exit_code == 0
    registered = json.loads(cli("--json", "register", str(spec), run_id).output)
    assert registered["version"]["status"] == "pending"
    refused = cli("--json", "deploy", "credit", "1")
    assert refused.exit_code == 1 and "only approved versions deploy" in refused.output
    approved = cli("--json", "approve", "credit", "1", "--reason", "checked [aws] by hand")
    assert json.loads(approved.output)["status"] == "approved"
    deployed = json.loads(cli("--json", "deploy", "credit").output)
    assert deployed["version"] == 1
    (listed,) = json.loads(cli("--json", "models").output)
    assert (listed["version"], listed["live"], listed["traffic"]) == (1, True, 1.0)
    # a canary runs beside another version: the live one cannot be its own canary
    alone = cli("deploy", "credit", "1", "--canary", "0.25")
    assert alone.exit_code == 1 and "a canary needs another live version" in alone.output
    # a reason with brackets reaches the table as written, not eaten as markup (the table
    # may fold the reason over lines: compare without the table's whitespace and rules)
    assert "checked[aws]byhand" in re.sub(r"[\s│]", "", cli("models").output)
    invalid = cli("reject", "credit", "1")
    assert invalid.exit_code == 1 and "cannot go from approved to rejected" in invalid.output


def test_promote_to_staging_keeps_lineage(cli, tmp_path):
    spec = small_spec(tmp_path, "synthetic://credit?rows=1200&seed=5")
    assert cli("pipeline", str(spec)).exit_code == 0
    promoted = cli("--json", "promote", "credit", "--to", "staging", "--approve")
    assert promoted.exit_code == 0, promoted.output
    version = json.loads(promoted.output)
    assert version["status"] == "approved"
    assert version["tags"]["promoted_from"] == "local:dev:credit:v1"
    staging = json.loads(cli("--json", "--stack", "staging", "models").output)
    assert len(staging) == 1 and staging[0]["tags"]["run_id"] == version["tags"]["run_id"]


def test_promote_names_source_and_target_as_cloud_and_stack(cli, tmp_path):
    spec = small_spec(tmp_path, "synthetic://credit?rows=1200&seed=5")
    assert cli("--stack", "qa", "pipeline", str(spec)).exit_code == 0
    # the global --stack is dev (empty): --from picks the source, --to the target
    promoted = cli("promote", "credit", "--from", "local:qa", "--to", "local:staging")
    assert promoted.exit_code == 0, promoted.output
    assert "local:qa → local:staging as v1" in promoted.output
    staging = json.loads(cli("--json", "--stack", "staging", "models", "credit").output)
    assert staging[0]["tags"]["promoted_from"] == "local:qa:credit:v1"
    unknown = cli("--json", "promote", "credit", "--from", "local:qa", "--to", "gcp:staging")
    assert unknown.exit_code == 2 and "unknown cloud 'gcp'" in unknown.output


def test_bad_spec_is_a_clear_error_not_a_traceback(cli, tmp_path):
    spec = small_spec(tmp_path, "synthetic://credit?rows=600&seed=1", max_fairness_gap="# x")
    spec.write_text(spec.read_text().replace("# x = 0.15", "max_fairness_gap = 3"))
    result = cli("train", str(spec))
    assert result.exit_code == 1
    assert "gates.max_fairness_gap" in result.output and str(spec) in result.output
    assert "Traceback" not in result.output


def test_bad_data_names_the_column(cli, tmp_path):
    data = tmp_path / "credit.csv"
    assert cli("data", str(data), "--rows", "300").exit_code == 0
    text = data.read_text().splitlines()
    header = text[0].split(",")
    row = text[5].split(",")
    row[header.index("income")] = "unknown"
    text[5] = ",".join(row)
    data.write_text("\n".join(text) + "\n")
    spec = small_spec(tmp_path, str(data))
    result = cli("train", str(spec))
    assert result.exit_code == 1
    assert "income" in result.output and "unknown" in result.output


def test_cloud_stack_without_outputs_says_how_to_connect(cli, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no Pulumi CLI on the path
    result = cli("--cloud", "aws", "models")
    assert result.exit_code == 1 and "--outputs" in result.output


def test_demo_runs_the_whole_lifecycle(cli):
    result = cli("--json", "demo")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [s["status"] for s in summary["steps"]] == ["approved", "approved", "rejected"]
    assert summary["live_version"] == 1 and summary["staging_version"] == 1
    answer = summary["prediction"]
    assert answer["version"] == 1 and len(answer["predictions"]) == 3


def test_azure_outputs_that_lack_keys_are_named(cli, tmp_path):
    outputs = tmp_path / "azure.json"
    outputs.write_text('{"cloud": "azure", "stack": "dev"}')
    result = cli("--cloud", "azure", "--outputs", str(outputs), "models")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "azure stack outputs lack" in result.output and "'storage_account_url'" in result.output


def test_an_unknown_cloud_is_refused(cli):
    result = cli("--cloud", "gcp", "models")
    assert result.exit_code == 2 and "unknown cloud 'gcp'" in result.output
