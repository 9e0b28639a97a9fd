"""Errors the CLI must report in one clear line (or one JSON document), never as a traceback
or a lie: bad model names, unknown runs, markup in messages, unreadable outputs, the demo."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ml.clouds.outputs import read_outputs
from ml.errors import ConfigError
from tests.e2e.conftest import small_spec


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("bad", ["../../x", "ABSOLUTE"])
@pytest.mark.parametrize(
    "verb",
    [
        ("approve", "{m}", "1"),
        ("reject", "{m}", "1"),
        ("models", "{m}"),
        ("deploy", "{m}"),
        ("deploy", "{m}", "1"),
        ("rollback", "{m}"),
        ("promote", "{m}", "--to", "staging"),
        ("runs", "{m}"),
    ],
    ids=lambda v: " ".join(v),
)
def test_a_bad_model_name_is_refused_before_the_stack_is_touched(cli, tmp_path, verb, bad):
    name = str(tmp_path / "elsewhere" / "x") if bad == "ABSOLUTE" else bad
    (tmp_path / "home").mkdir()
    # the stack's home and its parent: nothing new may appear in either, at any depth
    before = snapshot(tmp_path)
    result = cli(*(part.format(m=name) for part in verb))
    assert result.exit_code == 2, result.output
    assert "model name" in result.output and "lowercase letters" in result.output
    assert "Traceback" not in result.output
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "args",
    [
        ("--stack", "../x", "models"),
        ("promote", "credit", "--to", "../../x"),
        ("promote", "credit", "--to", "local:../x"),
        ("promote", "credit", "--from", "aws:../x", "--to", "staging"),
    ],
)
def test_a_bad_stack_name_is_refused_before_anything_is_created(cli, tmp_path, args):
    (tmp_path / "home").mkdir()
    before = snapshot(tmp_path)
    result = cli("--json", *args)
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)
    assert error["type"] == "InvalidNameError" and "stack name '" in error["error"]
    assert snapshot(tmp_path) == before


def test_runs_compare_takes_every_argument_as_a_run_id(cli, tmp_path):
    spec = small_spec(tmp_path, "synthetic://credit?rows=600&seed=3")
    first = json.loads(cli("--json", "train", str(spec)).output)["run_id"]
    retrain = small_spec(tmp_path, "synthetic://credit?rows=600&seed=3", "retrain.toml",
                         **{"n_estimators = 120": "n_estimators = 60"})  # fmt: skip
    second = json.loads(cli("--json", "train", str(retrain)).output)["run_id"]

    # the README's form: `runs [MODEL] [--compare RUN ...]`, with and without the model
    for args in (("--compare", first, second), ("credit", "--compare", first, second)):
        compared = cli("--json", "runs", *args)
        assert compared.exit_code == 0, compared.output
        assert [r["run_id"] for r in json.loads(compared.output)] == [first, second]
    table = cli("runs", "--compare", second, first)
    assert table.exit_code == 0 and "n_estimators=60/120" in table.output

    unknown = cli("--json", "runs", "--compare", first, "credit-19700101-000000-000000")
    assert unknown.exit_code == 1
    assert "'credit-19700101-000000-000000'" in json.loads(unknown.output)["error"]
    too_many = cli("runs", "credit", first)
    assert too_many.exit_code == 2 and "--compare" in too_many.output


def test_plain_errors_keep_their_brackets(cli, tmp_path):
    missing_spec = cli("train", str(tmp_path / "spec[aws].toml"))
    assert missing_spec.exit_code == 1
    assert "spec[aws].toml" in missing_spec.output
    missing_outputs = cli("--cloud", "aws", "--outputs", "dev[aws]^{0,38}$.json", "models")
    assert missing_outputs.exit_code == 1
    assert "dev[aws]^{0,38}$.json" in missing_outputs.output


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("not json at all", "not JSON"),
        ('["a", "list"]', "must be a JSON object"),
        (None, "cannot read stack outputs"),
        (b"\xff\xfe{}", "cannot read stack outputs"),
    ],
)
def test_an_unreadable_outputs_file_is_named(cli, tmp_path, content, says):
    path = tmp_path / "dev.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = cli("--json", "--cloud", "aws", "--outputs", str(path), "models")
    assert result.exit_code == 1
    error = json.loads(result.output)
    assert error["type"] == "ConfigError" and str(path) in error["error"]
    assert says in error["error"]


def fake_pulumi(directory: Path, script: str) -> None:
    """A `pulumi` executable on PATH: the process boundary the outputs reader talks to."""
    directory.mkdir(exist_ok=True)
    exe = directory / "pulumi"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_outputs_come_from_the_pulumi_cli_when_no_file_is_given(cli, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    fake_pulumi(bin_dir, 'echo "$@" > "$(dirname "$0")/args"; echo \'{"stack": "dev"}\'\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert read_outputs("aws", "qa") == {"stack": "dev"}
    assert (bin_dir / "args").read_text().split() == [
        "stack", "output", "--json", "--show-secrets", "--stack", "qa",
    ]  # fmt: skip
    # through the CLI: the outputs were read, then the azure adapter names what they lack
    result = cli("--cloud", "azure", "--stack", "qa", "models")
    assert result.exit_code == 1 and "azure stack outputs lack" in result.output


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ("echo 'error: no stack named qa' >&2; exit 255\n", "error: no stack named qa"),
        ("echo '[1, 2]'\n", "must be a JSON object"),
        ("echo 'Warning: not json'\n", "not JSON"),
    ],
)
def test_a_failing_pulumi_cli_is_named_with_the_stack(tmp_path, monkeypatch, script, says):
    fake_pulumi(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ConfigError) as caught:
        read_outputs("aws", "qa")
    message = str(caught.value)
    assert "pulumi stack output --json --show-secrets --stack qa" in message and says in message


def demo_examples(tmp_path: Path, **gates: str) -> Path:
    """The demo's three specs on small data, with the champion's gates replaced."""
    examples = tmp_path / "examples"
    examples.mkdir()
    source = "synthetic://credit?rows=800&seed=3"
    small_spec(examples, source, "credit.toml", **gates)
    small_spec(examples, source, "credit_retrain.toml", example="credit_retrain.toml")
    small_spec(examples, source, "credit_weak.toml", example="credit_weak.toml")
    return examples


def test_a_demo_step_that_misbehaves_is_one_line_and_exit_1(cli, tmp_path):
    examples = demo_examples(tmp_path, **{"roc_auc = 0.75": "roc_auc = 0.999"})
    result = cli("--json", "demo", "--examples", str(examples))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    error = json.loads(result.stdout)  # the error is the only document: the story stopped
    assert error["type"] == "DemoStepError"  # the demo's own check, not an unexpected crash
    assert "demo step 'train the champion' (credit.toml) should pass" in error["error"]
    assert "roc_auc" in error["error"] and "0.999" in error["error"]  # the verdict's reason
    assert "\n" not in error["error"]


def test_a_demo_with_a_broken_spec_is_one_line_and_exit_1(cli, tmp_path):
    examples = demo_examples(tmp_path)
    (examples / "credit_weak.toml").write_text("name = [")
    result = cli("--json", "demo", "--examples", str(examples))
    assert result.exit_code == 1
    error = json.loads(result.stdout.strip().splitlines()[-1])
    assert error["type"] == "SpecError" and "credit_weak.toml" in error["error"]
