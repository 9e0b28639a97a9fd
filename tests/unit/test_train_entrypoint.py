"""`python -m ml.train`: the same script locally, as a SageMaker job and as an Azure ML job."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml import artifact, datasets, train
from tests.conftest import REPO, write_spec

SMALL_MODEL = {"kind": "gradient_boosting", "params": {"n_estimators": 20, "max_depth": 2}}
PLATFORM_PREFIXES = ("SM_", "AZUREML_", "TRAINING_JOB_NAME", "MLFLOW_")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any platform variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PLATFORM_PREFIXES)}
    env["TANDEM_CODE_VERSION"] = "test-code-1"
    env.update(extra)
    return env


def run_train(args: list[str], env: dict[str, str], cwd: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "ml.train", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def csv_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "channel"
    folder.mkdir()
    datasets.credit(rows=500, seed=21).to_csv(folder / "loans.csv", index=False)
    return folder


def test_local_run(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
    out = run_train(
        ["--spec", str(spec), "--model-dir", str(tmp_path / "model"), "--run-id", "local-1"],
        clean_env(),
        cwd=tmp_path,
    )
    assert out["run_id"] == "local-1"
    assert Path(out["artifact_dir"]) == tmp_path / "model"
    loaded = artifact.load(tmp_path / "model")
    assert loaded.card["environment"] == "local"
    assert loaded.card["run_id"] == "local-1"
    assert loaded.card["data"]["uri"] == "synthetic://credit?rows=600&seed=3"
    assert loaded.card["code_version"] == "test-code-1"
    assert out["metrics"] == loaded.card["metrics"]


def test_local_run_with_param_override_and_default_dirs(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
    out = run_train(["--spec", str(spec), "--param", "n_estimators=7"], clean_env(), cwd=tmp_path)
    assert out["run_id"].startswith("credit-")
    model_dir = tmp_path / "artifacts" / "credit" / out["run_id"]
    assert Path(out["artifact_dir"]) == Path("artifacts") / "credit" / out["run_id"]
    assert artifact.load(model_dir).card["params"]["n_estimators"] == 7


def test_bad_data_fails_with_a_clear_message(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
    bad = tmp_path / "bad.csv"
    datasets.credit(rows=100, seed=1).drop(columns=["income"]).to_csv(bad, index=False)
    done = subprocess.run(
        [sys.executable, "-m", "ml.train", "--spec", str(spec), "--data", str(bad),
         "--model-dir", str(tmp_path / "model")],
        cwd=tmp_path, env={**clean_env(), "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "missing column(s) ['income']" in done.stderr
    assert not (tmp_path / "model" / artifact.MANIFEST).exists()


def test_sagemaker_conventions(tmp_path: Path, csv_dir: Path) -> None:
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    # SageMaker's SDKs write every hyperparameter value as a JSON-encoded string
    hyper = {
        "spec": json.dumps(str(spec)),
        "n_estimators": "12",
        "learning_rate": "0.2",
        "sagemaker_program": '"ml/train.py"',
    }
    (config / "hyperparameters.json").write_text(json.dumps(hyper))
    env = clean_env(
        SM_MODEL_DIR=str(tmp_path / "opt-model"),
        SM_CHANNEL_TRAIN=str(csv_dir),
        SM_INPUT_CONFIG_DIR=str(config),
        TRAINING_JOB_NAME="credit-job-42",
    )
    out = run_train([], env, cwd=tmp_path)
    assert out["run_id"] == "credit-job-42"
    card = artifact.load(tmp_path / "opt-model").card
    assert card["environment"] == "sagemaker"
    assert card["run_id"] == "credit-job-42"
    assert card["data"]["uri"] == str(csv_dir / "loans.csv")
    assert card["data"]["rows"] == 500
    assert card["params"]["n_estimators"] == 12
    assert card["params"]["learning_rate"] == 0.2
    assert "sagemaker_program" not in card["params"]


def test_sagemaker_hyperparameters_default_location(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "hyperparameters.json").write_text(json.dumps({"spec": '"s.toml"', "max_depth": "4"}))
    monkeypatch.setattr(train, "SAGEMAKER_INPUT_CONFIG_DIR", str(config))
    monkeypatch.delenv("SM_INPUT_CONFIG_DIR", raising=False)
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "m"))
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.setenv("TRAINING_JOB_NAME", "job-7")
    args = argparse.Namespace(
        spec=None, data=None, data_uri=None, model_dir=None, run_id=None, param=["n_estimators=3"]
    )
    environment, overrides = train.resolve_environment(args)
    assert environment == "sagemaker"
    assert args.spec == "s.toml"
    assert args.model_dir == str(tmp_path / "m")
    assert args.run_id == "job-7"
    assert overrides == {"max_depth": 4, "n_estimators": 3}


def test_sagemaker_channel_with_two_files_is_refused(
    tmp_path: Path, csv_dir: Path, monkeypatch
) -> None:
    (csv_dir / "more.csv").write_text("a,b\n1,2\n")
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(csv_dir))
    monkeypatch.setenv("SM_INPUT_CONFIG_DIR", str(tmp_path / "absent"))
    args = argparse.Namespace(
        spec="s.toml", data=None, data_uri=None, model_dir=None, run_id=None, param=None
    )
    with pytest.raises(SystemExit, match=r"expected one \.csv/\.parquet file"):
        train.resolve_environment(args)


def test_azureml_conventions(tmp_path: Path, csv_dir: Path) -> None:
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
    env = clean_env(AZUREML_RUN_ID="aml-run-9", AZUREML_EXPERIMENT_NAME="credit")
    out = run_train(
        ["--spec", str(spec), "--data", str(csv_dir), "--model-dir", str(tmp_path / "outputs")],
        env,
        cwd=tmp_path,
    )
    assert out["run_id"] == "aml-run-9"
    card = artifact.load(tmp_path / "outputs").card
    assert card["environment"] == "azureml"
    assert card["run_id"] == "aml-run-9"
    assert card["data"]["uri"] == str(csv_dir / "loans.csv")
    assert card["data"]["rows"] == 500


def test_training_is_deterministic(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
    outputs = []
    for name in ("a", "b"):
        run_train(
            ["--spec", str(spec), "--model-dir", str(tmp_path / name), "--run-id", "same"],
            clean_env(PYTHONHASHSEED=str(len(outputs) + 1)),
            cwd=tmp_path,
        )
        outputs.append(tmp_path / name)
    cards = [artifact.load(d).card for d in outputs]

    def quality(card: dict) -> dict:
        return {k: v for k, v in card["metrics"].items() if not k.startswith("latency_")}

    assert quality(cards[0]) == quality(cards[1])
    assert cards[0]["evaluation"]["confusion"] == cards[1]["evaluation"]["confusion"]
    assert cards[0]["feature_importances"] == cards[1]["feature_importances"]
    assert cards[0]["data"]["hash"] == cards[1]["data"]["hash"]
    onnx = [(d / artifact.ONNX).read_bytes() for d in outputs]
    assert onnx[0] == onnx[1]
    baselines = [(d / artifact.BASELINE).read_bytes() for d in outputs]
    assert baselines[0] == baselines[1]


def test_sagemaker_toolkit_arguments_are_accepted(tmp_path: Path, csv_dir: Path) -> None:
    """The training toolkit repeats each hyperparameter as `--key value` on the command line."""
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    hyper = {"spec": json.dumps(str(spec)), "n_estimators": "7"}
    (config / "hyperparameters.json").write_text(json.dumps(hyper))
    env = clean_env(
        SM_MODEL_DIR=str(tmp_path / "model"),
        SM_CHANNEL_TRAIN=str(csv_dir),
        SM_INPUT_CONFIG_DIR=str(config),
    )
    run_train(["--spec", str(spec), "--n_estimators", "7"], env, cwd=tmp_path)
    assert artifact.load(tmp_path / "model").card["params"]["n_estimators"] == 7


def test_unknown_arguments_are_refused_outside_sagemaker(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, estimator=SMALL_MODEL)
    done = subprocess.run(
        [sys.executable, "-m", "ml.train", "--spec", str(spec), "--n_estimators", "7"],
        cwd=tmp_path,
        env={**clean_env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unrecognized arguments: --n_estimators 7" in done.stderr
