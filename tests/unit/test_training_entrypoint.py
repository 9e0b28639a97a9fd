"""`train` (deploy/training/entrypoint.py), the training image's entry point, run as
SageMaker runs it: a process over an /opt/ml tree (here under a temporary directory, via
SAGEMAKER_BASE_DIR), with the code in a tarball and the hyperparameters JSON-encoded."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from ml import datasets
from ml.clouds.packaging import source_files, sourcedir_tarball, spec_path_in_job
from ml.spec import load_spec
from tests.conftest import REPO, write_spec

ENTRYPOINT = REPO / "deploy" / "training" / "entrypoint.py"
PLATFORM_PREFIXES = ("SM_", "SAGEMAKER_", "TRAINING_JOB_NAME", "AZUREML_", "MLFLOW_")
SMALL_MODEL = {"kind": "gradient_boosting", "params": {"n_estimators": 10, "max_depth": 2}}

# A program that records what it was given, in the model directory.
RECORDER = """\
import json, os, sys
import helper  # from the code directory: PYTHONPATH points there
out = os.path.join(os.environ["SM_MODEL_DIR"], "model.json")
with open(out, "w") as f:
    json.dump({
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "helper": helper.VALUE,
        "env": {k: v for k, v in os.environ.items()
                if k.startswith("SM_") or k == "TRAINING_JOB_NAME"},
        "train_files": sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"])),
    }, f)
"""


def tarball(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Container:
    """An /opt/ml tree under ``root``, laid out as SageMaker lays it out for a job."""

    def __init__(self, root: Path) -> None:
        self.base = root / "opt" / "ml"
        self.config = self.base / "input" / "config"
        self.data = self.base / "input" / "data"
        self.model = self.base / "model"
        self.failure = self.base / "output" / "failure"
        self.config.mkdir(parents=True)

    def channel(self, name: str, files: dict[str, bytes]) -> Path:
        directory = self.data / name
        directory.mkdir(parents=True, exist_ok=True)
        for filename, data in files.items():
            (directory / filename).write_bytes(data)
        return directory

    def code_channel(self, files: dict[str, str | bytes]) -> str:
        """The code as the `code` channel, as ml/clouds/aws/ sends it with isolation on."""
        self.channel("code", {"sourcedir.tar.gz": tarball(files)})
        return str(self.data / "code" / "sourcedir.tar.gz")

    def hyperparameters(self, values: dict[str, Any], raw: dict[str, str] | None = None) -> None:
        # SageMaker hands over strings; its SDKs JSON-encode each value (`raw`: verbatim)
        encoded = {k: json.dumps(v) for k, v in values.items()} | (raw or {})
        (self.config / "hyperparameters.json").write_text(json.dumps(encoded))
        (self.config / "inputdataconfig.json").write_text(
            json.dumps({p.name: {"TrainingInputMode": "File"} for p in self.data.iterdir()})
            if self.data.is_dir()
            else "{}"
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(PLATFORM_PREFIXES)}
        env.pop("PYTHONPATH", None)
        env.update(SAGEMAKER_BASE_DIR=str(self.base), TANDEM_CODE_VERSION="test-code-1")
        env.update(extra)
        return env

    def run(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ENTRYPOINT), "train"],
            env=self.env(**extra),
            cwd=self.base.parent,
            capture_output=True,
            text=True,
            timeout=180,
        )


@pytest.fixture
def container(tmp_path: Path) -> Container:
    return Container(tmp_path)


def recorder_job(
    container: Container, raw: dict[str, str] | None = None, **hyperparameters: Any
) -> None:
    container.channel("train", {"data.csv": b"a,b\n1,2\n"})
    submit = container.code_channel({"jobs/record.py": RECORDER, "helper.py": "VALUE = 7\n"})
    container.hyperparameters(
        {
            "sagemaker_program": "jobs/record.py",
            "sagemaker_submit_directory": submit,
            "sagemaker_region": "us-east-1",
            "sagemaker_job_name": "tandem-dev-run-1",
            **hyperparameters,
        },
        raw,
    )


def test_success_runs_the_program_and_leaves_its_artifact_in_the_model_dir(container):
    recorder_job(container, spec="specs/spec.toml", data_uri="s3://bucket/datasets/x.csv")
    done = container.run()
    assert done.returncode == 0, done.stderr
    record = json.loads((container.model / "model.json").read_text())
    code = container.base / "code"
    assert record["cwd"] == str(code), "the program runs in the code directory"
    assert record["helper"] == 7, "the code directory is on PYTHONPATH (helper.py is there)"
    assert record["train_files"] == ["data.csv"]
    env = record["env"]
    assert env["SM_MODEL_DIR"] == str(container.model)
    assert env["SM_CHANNEL_TRAIN"] == str(container.data / "train")
    assert env["SM_CHANNEL_CODE"] == str(container.data / "code")
    assert json.loads(env["SM_CHANNELS"]) == ["code", "train"]
    assert env["SM_INPUT_CONFIG_DIR"] == str(container.config)
    assert env["SM_OUTPUT_DATA_DIR"] == str(container.base / "output" / "data")
    assert env["SM_USER_ENTRY_POINT"] == "jobs/record.py"
    assert env["TRAINING_JOB_NAME"] == "tandem-dev-run-1"
    assert json.loads(env["SM_HPS"]) == {
        "data_uri": "s3://bucket/datasets/x.csv",
        "spec": "specs/spec.toml",
    }
    assert not container.failure.exists()


def test_hyperparameters_become_key_value_arguments_as_the_toolkit_passes_them(container):
    recorder_job(
        container,
        spec="specs/spec.toml",
        epochs=3,
        learning_rate=0.05,
        early_stop=True,
        k=5,
        weights={"b": 2, "a": 1},
        raw={"note": "not json"},  # not JSON-encoded: kept as the string it is
    )
    done = container.run()
    assert done.returncode == 0, done.stderr
    argv = json.loads((container.model / "model.json").read_text())["argv"]
    # sorted by key; no sagemaker_* key; decoded values as str(); one-letter keys get "-"
    assert argv == [
        "--early_stop", "True",
        "--epochs", "3",
        "-k", "5",
        "--learning_rate", "0.05",
        "--note", "not json",
        "--spec", "specs/spec.toml",
        "--weights", "a=1,b=2",
    ]  # fmt: skip


def test_environment_the_platform_set_is_kept(container):
    recorder_job(container)
    elsewhere = container.base.parent / "model-elsewhere"
    done = container.run(SM_MODEL_DIR=str(elsewhere), TRAINING_JOB_NAME="set-by-sagemaker")
    assert done.returncode == 0, done.stderr
    env = json.loads((elsewhere / "model.json").read_text())["env"]
    assert env["SM_MODEL_DIR"] == str(elsewhere)
    assert env["TRAINING_JOB_NAME"] == "set-by-sagemaker"


def test_a_failing_spec_writes_the_failure_file_and_exits_non_zero(container, tmp_path):
    """The real training script (`ml/train.py`, packaged as ml/clouds/aws/ packages it)
    on data that lacks a column the spec names."""
    spec = load_spec(write_spec(tmp_path, estimator=SMALL_MODEL))
    frame = datasets.credit(rows=200, seed=3).drop(columns=["income"])
    container.channel("train", {"credit.csv": frame.to_csv(index=False).encode()})
    container.channel("code", {"sourcedir.tar.gz": sourcedir_tarball(source_files(spec))})
    container.hyperparameters(
        {
            "spec": spec_path_in_job(spec),
            "data_uri": "s3://bucket/datasets/credit/abc.csv",
            "sagemaker_program": "ml/train.py",
            # the path the adapter sends, read under SAGEMAKER_BASE_DIR
            "sagemaker_submit_directory": "/opt/ml/input/data/code/sourcedir.tar.gz",
            "sagemaker_job_name": "tandem-dev-credit-1",
        }
    )
    done = container.run()
    assert done.returncode != 0, done.stderr
    reason = container.failure.read_text()
    assert reason.startswith("ml/train.py exited with code 1:"), reason
    assert "income" in reason, f"the failure names the missing column: {reason!r}"
    assert len(reason) <= 1024, "SageMaker keeps only the first 1024 characters"
    assert "income" in done.stderr, "the program's stderr also reaches the job's logs"
    assert not any(container.model.iterdir()), "no artifact from a failed run"


def test_failure_reason_keeps_the_end_of_a_long_traceback(container):
    noisy = (
        "import sys\n"
        "for i in range(400):\n"
        "    print(f'progress line {i} ' + 'x' * 40, file=sys.stderr)\n"
        "raise SystemExit('ValueError: the actual reason')\n"
    )
    submit = container.code_channel({"noisy.py": noisy})
    container.hyperparameters(
        {"sagemaker_program": "noisy.py", "sagemaker_submit_directory": submit}
    )
    done = container.run()
    assert done.returncode == 1
    reason = container.failure.read_text()
    assert len(reason) <= 1024, len(reason)
    assert reason.splitlines()[0] == "noisy.py exited with code 1:"
    assert reason.splitlines()[-1] == "ValueError: the actual reason"
    assert "progress line 399" in reason and "progress line 0 " not in reason


def test_failure_reason_keeps_the_end_of_one_huge_line(container):
    huge = "raise SystemExit('x' * 3000 + ' the end')\n"
    submit = container.code_channel({"huge.py": huge})
    container.hyperparameters(
        {"sagemaker_program": "huge.py", "sagemaker_submit_directory": submit}
    )
    assert container.run().returncode == 1
    reason = container.failure.read_text()
    assert len(reason) <= 1024 and reason.endswith("x the end"), (len(reason), reason[-40:])


def test_exit_code_of_the_program_is_the_containers(container):
    submit = container.code_channel({"three.py": "raise SystemExit(3)\n"})
    container.hyperparameters(
        {"sagemaker_program": "three.py", "sagemaker_submit_directory": submit}
    )
    assert container.run().returncode == 3
    assert container.failure.read_text().startswith("three.py exited with code 3")


def test_s3_submit_directory_is_refused_with_a_clear_error(container):
    container.channel("train", {"data.csv": b"a\n1\n"})
    container.hyperparameters(
        {
            "sagemaker_program": "ml/train.py",
            "sagemaker_submit_directory": "s3://tandem-dev-models/artifacts/credit/run/code/sourcedir.tar.gz",
        }
    )
    done = container.run()
    assert done.returncode == 2
    reason = container.failure.read_text()
    assert "s3://tandem-dev-models/artifacts/credit/run/code/sourcedir.tar.gz" in reason
    assert "network isolation" in reason and "'code' input channel" in reason, reason
    assert "cannot download code" in done.stderr
    assert not (container.base / "code" / "ml").exists(), "nothing ran"


@pytest.mark.parametrize(
    ("hyperparameters", "expected"),
    [
        (
            {"sagemaker_submit_directory": "/nowhere/sourcedir.tar.gz"},
            "hyperparameter sagemaker_program is missing",
        ),
        (
            {
                "sagemaker_program": "x.py",
                "sagemaker_submit_directory": "/nowhere/sourcedir.tar.gz",
            },
            "/nowhere/sourcedir.tar.gz does not exist (is the 'code' channel",
        ),
        (
            {
                "sagemaker_program": "x.py",
                "sagemaker_submit_directory": "https://example.com/c.tgz",
            },
            "only local paths are supported",
        ),
    ],
)
def test_setup_errors_name_what_is_wrong(container, hyperparameters, expected):
    container.hyperparameters(hyperparameters)
    done = container.run()
    assert done.returncode == 2
    assert expected in container.failure.read_text()


def test_a_program_outside_the_code_is_refused(container):
    submit = container.code_channel({"ok.py": "pass\n"})
    container.hyperparameters(
        {"sagemaker_program": "../../../../etc/hostname", "sagemaker_submit_directory": submit}
    )
    done = container.run()
    assert done.returncode == 2
    assert "is not a file in the code" in container.failure.read_text()


def test_a_tarball_escaping_the_code_directory_is_refused(container):
    submit = container.code_channel({"../escaped.py": "pass\n", "ok.py": "pass\n"})
    container.hyperparameters({"sagemaker_program": "ok.py", "sagemaker_submit_directory": submit})
    done = container.run()
    assert done.returncode == 2
    assert "cannot extract the code" in container.failure.read_text()
    assert not (container.base / "escaped.py").exists()


def test_missing_hyperparameters_file(container):
    done = container.run()
    assert done.returncode == 2
    assert "hyperparameters.json does not exist" in container.failure.read_text()


def test_sigterm_reaches_the_program(container):
    """StopTrainingJob sends SIGTERM to the container's first process: the program gets
    it and can save what it has before SageMaker's SIGKILL."""
    graceful = (
        "import os, signal, sys, time\n"
        "model = os.environ['SM_MODEL_DIR']\n"
        "def stop(signum, frame):\n"
        "    open(os.path.join(model, 'checkpoint'), 'w').write('saved')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "open(os.path.join(model, 'started'), 'w').close()\n"
        "time.sleep(60)\n"
    )
    submit = container.code_channel({"graceful.py": graceful})
    container.hyperparameters(
        {"sagemaker_program": "graceful.py", "sagemaker_submit_directory": submit}
    )
    process = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT)],
        env=container.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (container.model / "started").exists():
            assert process.poll() is None, "the entry point ended before the program started"
            assert time.monotonic() < deadline, "the program never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert (container.model / "checkpoint").read_text() == "saved"


def test_unexpected_arguments_are_refused(container):
    done = subprocess.run(
        [sys.executable, str(ENTRYPOINT), "serve"],
        env=container.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "usage: train" in done.stderr
