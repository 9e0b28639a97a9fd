"""What botocore raises never reaches a user as a traceback: each adapter method raises
Tandem's one-line errors (ml/clouds/aws/common.py: translate_errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml.cli import app
from ml.clouds.aws import S3ArtifactStore
from ml.errors import NotFoundError, TandemError
from tests.integration.aws_fixtures import client, fake_credentials, free_port, moto_backend

KEY = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"


def test_a_missing_bucket_is_a_one_line_error_naming_it(monkeypatch, tmp_path: Path) -> None:
    fake_credentials(monkeypatch, tmp_path)
    with moto_backend("in-process"):
        store = S3ArtifactStore(
            client("s3"), models_bucket="gone-models", data_bucket="gone-data", kms_key_arn=KEY
        )
        with pytest.raises(NotFoundError, match="bucket gone-models does not exist"):
            store.put_bytes("runs/credit/r.json", b"{}")
        with pytest.raises(NotFoundError, match="gone-models"):
            store.list_keys("runs/")


def test_an_unreachable_endpoint_is_a_one_line_error_from_the_cli(
    monkeypatch, tmp_path: Path
) -> None:
    """The whole path a user takes: outputs file -> connect -> a verb; nothing listens."""
    fake_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no retry back-off in a test
    outputs = {
        "cloud": "aws", "stack": "dev", "region": "us-east-1", "name_prefix": "tandem-dev",
        "kms_key_arn": KEY, "data_bucket": "d", "models_bucket": "m",
        "sagemaker_role_arn": "arn:aws:iam::123456789012:role/r",
        "model_package_groups": {"credit": "tandem-dev-credit"},
        "endpoints": {"credit": {"function_name": "f", "alias": "live", "url": "https://x"}},
        "metric_namespace": "Tandem",
        "training_image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/t:1",
        "serving_image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/s:1",
        "pseudonym_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:k",
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
    }  # fmt: skip
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(outputs))
    result = CliRunner().invoke(app, ["--cloud", "aws", "--outputs", str(path), "runs"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "cannot reach AWS at http://127.0.0.1:" in result.output
    assert "Traceback" not in result.output


def test_the_translation_keeps_the_cause_for_debugging(monkeypatch, tmp_path: Path) -> None:
    fake_credentials(monkeypatch, tmp_path)
    with moto_backend("in-process"):
        store = S3ArtifactStore(client("s3"), models_bucket="m", data_bucket="d", kms_key_arn=KEY)
        with pytest.raises(TandemError) as caught:
            store.put_bytes("runs/x.json", b"{}")
        assert type(caught.value.__cause__).__name__ == "NoSuchBucket"
