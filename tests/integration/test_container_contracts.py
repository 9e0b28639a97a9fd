"""The serving container's entry command run as a process, with the paths and environment each
platform gives it (no Docker engine here): SageMaker's /ping and /invocations on its port with
the model in the model directory (given with --model-dir instead of /opt/ml/model), Azure ML's
routes and port from the environment with the model in a subfolder of $AZUREML_MODEL_DIR.
Both answer what Service.handle answers for the same request."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from contract import serving
from deploy.inference import MANIFEST, TARBALL, Model
from deploy.service import Service
from tests.conftest import REPO
from tests.integration.http_helpers import JSON, Client, free_port
from tests.integration.test_server import GOOD


@contextmanager
def container(env: Mapping[str, str], *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m deploy.container serve ARGS` with `env` (on loopback); yields the process
    and its URL once it answers, then stops it with SIGTERM and expects exit status 0."""
    port = int(env.get(serving.ENV_PORT) or env.get(serving.ENV_SAGEMAKER_PORT) or free_port())
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TANDEM_", "AZUREML_"))},
        "PYTHONPATH": str(REPO),
        serving.ENV_HOST: "127.0.0.1",
        **env,
    }
    if serving.ENV_PORT not in env and serving.ENV_SAGEMAKER_PORT not in env:
        full[serving.ENV_PORT] = str(port)
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.container", "serve", *args],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stderr.readline()
        assert line.startswith("serving credit"), line + process.stderr.read()
        url = f"http://127.0.0.1:{port}"
        assert line.strip().endswith(url), line
        yield process, url
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def same_as_service(
    url: str, model_dir: Path, ping: str, score: str, version: int | None = None
) -> None:
    service = Service(Model.load(model_dir, version=version))
    with Client(url) as client:
        assert client.request("GET", ping).status == 200
        for body in (GOOD, b'{"instances": [{"age": "x"}]}', b"{"):
            headers = {**JSON, serving.REQUEST_ID_HEADER: "contract-1"}
            answer = client.request("POST", score, body, headers)
            expected = service.handle("POST", serving.PREDICT_PATH, headers, body)
            assert answer.status == expected.status
            assert answer.json() == json.loads(expected.body)
        # the common routes answer too
        assert client.request("GET", serving.HEALTH_PATH).status == 200
        assert client.request("GET", serving.LIVENESS_PATH).status == 200
        assert client.request("POST", serving.PREDICT_PATH, GOOD, JSON).status == 200


def test_sagemaker_hosting_contract(trained_artifact: Path, tmp_path: Path) -> None:
    # SageMaker unpacks model.tar.gz into /opt/ml/model: the artifact's files, at the top
    model_dir = tmp_path / "opt" / "ml" / "model"
    shutil.copytree(trained_artifact, model_dir)
    env = {serving.ENV_SAGEMAKER_PORT: str(free_port())}
    with container(env, "--model-dir", str(model_dir)) as (_, url):
        same_as_service(
            url, model_dir, serving.SAGEMAKER_PING_PATH, serving.SAGEMAKER_INVOCATIONS_PATH
        )


def test_a_model_tarball_is_unpacked_and_verified(trained_artifact: Path, tmp_path: Path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(trained_artifact / TARBALL, model_dir / TARBALL)
    with container({}, "--model-dir", str(model_dir)) as (_, url):
        same_as_service(url, trained_artifact, "/ping", "/invocations")


def test_azure_ml_online_endpoint_contract(trained_artifact: Path, tmp_path: Path) -> None:
    # Azure ML mounts a model registered from the folder `artifact` as
    # $AZUREML_MODEL_DIR/artifact; the routes are the environment's inference_config
    root = tmp_path / "azureml-models" / "credit" / "3"
    shutil.copytree(trained_artifact, root / "artifact")
    env = {
        serving.ENV_AZUREML_MODEL_DIR: str(root),
        serving.ENV_PORT: str(free_port()),
        serving.ENV_LIVENESS_PATH: "/alive",
        serving.ENV_READINESS_PATH: "/ready",
        serving.ENV_SCORING_PATH: "/score",
        serving.ENV_MODEL_VERSION: "3",
    }
    with container(env) as (_, url), Client(url) as client:
        assert client.request("GET", "/alive").json()["status"] == "alive"
        assert client.request("GET", "/ready").json()["version"] == 3
        same_as_service(url, root / "artifact", "/ready", "/score", version=3)


def test_capture_goes_to_a_mounted_directory(trained_artifact: Path, tmp_path: Path) -> None:
    captured = tmp_path / "capture"
    env = {serving.ENV_CAPTURE_URI: str(captured), serving.ENV_MODEL_VERSION: "1"}
    with container(env, "--model-dir", str(trained_artifact)) as (_, url), Client(url) as client:
        assert client.request("POST", "/invocations", GOOD, JSON).status == 200
    # flushed at shutdown: one line per row, personal columns dropped
    lines = [json.loads(line) for f in captured.rglob("*.jsonl") for line in f.open()]
    assert len(lines) == 2 and {line["version"] for line in lines} == {1}


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({serving.ENV_AZUREML_MODEL_DIR: "/nonexistent/model"}, [], "does not exist"),
        ({serving.ENV_CAPTURE_URI: "https://example.com/x"}, [], "mounted directory"),
        ({serving.ENV_PORT: "eighty"}, [], "expected an integer"),
        ({serving.ENV_SCORING_PATH: "score"}, [], "must start with '/'"),
    ],
)
def test_a_bad_configuration_exits_with_a_message(
    trained_artifact: Path, tmp_path: Path, env, args, message
) -> None:
    if serving.ENV_AZUREML_MODEL_DIR not in env:
        args = ["--model-dir", str(trained_artifact)]
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    result = subprocess.run(
        [sys.executable, "-m", "deploy.container", "serve", *args],
        env=full, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_two_models_in_one_directory_are_refused(trained_artifact: Path, tmp_path: Path):
    for name in ("a", "b"):
        shutil.copytree(trained_artifact, tmp_path / "m" / name)
    result = subprocess.run(
        [sys.executable, "-m", "deploy.container", "serve", "--model-dir", str(tmp_path / "m")],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "more than one model" in result.stderr


def test_the_container_imports_only_the_serving_dependencies() -> None:
    code = (
        "import sys, deploy.container; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'sklearn', 'pandas', 'ml', 'boto3', 'skl2onnx', 'scipy', 'pydantic'}))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    requirements = (REPO / "deploy" / "requirements-serving.txt").read_text()
    pinned = [line for line in requirements.splitlines() if line and not line.startswith("#")]
    assert [p.split("==")[0] for p in pinned] == ["numpy", "onnxruntime"]
    assert (REPO / "deploy" / "Dockerfile").read_text().count('CMD ["serve"]') == 1
    assert MANIFEST  # the container finds artifacts by their manifest
