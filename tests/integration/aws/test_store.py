"""S3ArtifactStore against moto: SSE-KMS and checksums on every object, the manifest last,
multipart verified without downloading, tampering and conflicts named. (What every store
guarantees is in tests/contract/test_store.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ml import artifact
from ml.clouds.aws import composite_sha256
from ml.clouds.base import Stack
from ml.errors import ArtifactIntegrityError, ConflictError
from tests.integration.aws_fixtures import both_backends, calls, client, sealed_artifact


@both_backends
def test_artifact_round_trip_encrypted_and_checksummed(
    stack: Stack, outputs: dict[str, Any], artifact_copy: Path, tmp_path: Path, endpoint_url
) -> None:
    uri = stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    assert uri == f"s3://{outputs['models_bucket']}/artifacts/credit/run-1"
    s3 = client("s3", endpoint_url)
    manifest = json.loads((artifact_copy / artifact.MANIFEST).read_text())["files"]
    for name in (*manifest, artifact.MANIFEST, artifact.TARBALL):
        head = s3.head_object(
            Bucket=outputs["models_bucket"],
            Key=f"artifacts/credit/run-1/{name}",
            ChecksumMode="ENABLED",
        )
        assert head["ServerSideEncryption"] == "aws:kms", name
        assert head["SSEKMSKeyId"] == outputs["kms_key_arn"], name
        assert head["ChecksumSHA256"], name
    fetched = stack.store.get_artifact(uri, tmp_path / "fetched")
    assert artifact.verify(fetched) == manifest
    for name in (*manifest, artifact.TARBALL):
        assert (fetched / name).read_bytes() == (artifact_copy / name).read_bytes()


def test_manifest_is_written_last(stack: Stack, artifact_copy: Path) -> None:
    puts = calls(stack.store.s3, "PutObject")
    stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    keys = [p["Key"].rsplit("/", 1)[-1] for p in puts]
    assert keys[-1] == artifact.MANIFEST
    assert puts[-1]["IfNoneMatch"] == "*"  # the first complete writer wins
    assert set(keys[:-1]) == {artifact.ONNX, artifact.CARD, artifact.BASELINE, artifact.TARBALL}


def test_put_artifact_is_idempotent(stack: Stack, artifact_copy: Path) -> None:
    first = stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    puts = calls(stack.store.s3, "PutObject")
    assert stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1/") == first
    assert puts == []  # verified in place, nothing sent again


def test_different_content_under_the_same_key_conflicts(
    stack: Stack, artifact_copy: Path, tmp_path: Path
) -> None:
    stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    other = tmp_path / "other"
    shutil.copytree(artifact_copy, other)
    (other / artifact.BASELINE).write_text('{"changed": true}\n')
    artifact.seal(other)
    with pytest.raises(ConflictError, match=r"baseline\.json"):
        stack.store.put_artifact(other, "artifacts/credit/run-1")
    fetched = stack.store.get_artifact(
        stack.store.uri_for("artifacts/credit/run-1"), tmp_path / "f"
    )
    assert (fetched / artifact.BASELINE).read_bytes() == (
        artifact_copy / artifact.BASELINE
    ).read_bytes()


def test_tampered_object_is_named_on_get(
    stack: Stack, outputs: dict[str, Any], artifact_copy: Path, tmp_path: Path
) -> None:
    uri = stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    s3 = client("s3")
    s3.put_object(
        Bucket=outputs["models_bucket"], Key="artifacts/credit/run-1/model.onnx", Body=b"evil"
    )
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
        stack.store.get_artifact(uri, tmp_path / "fetched")
    # and a re-put of the genuine artifact does not vouch for the tampered copy
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
        stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")


def test_a_listed_file_missing_from_s3_is_named(
    stack: Stack, outputs: dict[str, Any], artifact_copy: Path, tmp_path: Path
) -> None:
    uri = stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")
    client("s3").delete_object(
        Bucket=outputs["models_bucket"], Key="artifacts/credit/run-1/model_card.json"
    )
    with pytest.raises(ArtifactIntegrityError, match=r"model_card\.json.*missing"):
        stack.store.get_artifact(uri, tmp_path / "fetched")


def test_keys_map_to_their_buckets(stack: Stack, outputs: dict[str, Any]) -> None:
    assert stack.store.put_bytes("datasets/credit/a.csv", b"a,b\n") == (
        f"s3://{outputs['data_bucket']}/datasets/credit/a.csv"
    )
    stack.store.put_bytes("runs/credit/r1.json", b"{}")
    stack.store.put_bytes("reports/credit/r1.html", b"<p>")
    assert stack.store.list_keys("runs/") == ["runs/credit/r1.json"]
    assert stack.store.list_keys("datasets/") == ["datasets/credit/a.csv"]
    assert stack.store.list_keys("") == [
        "datasets/credit/a.csv",
        "reports/credit/r1.html",
        "runs/credit/r1.json",
    ]
    # the serving functions' code sits in the models bucket too: the platform's, not listed
    s3 = client("s3", outputs.get("endpoint_url"))
    assert s3.head_object(Bucket=outputs["models_bucket"], Key="lambda/tandem-lambda.zip")
    assert stack.store.get_bytes(f"s3://{outputs['data_bucket']}/datasets/credit/a.csv") == b"a,b\n"


@both_backends
def test_multipart_above_the_threshold_is_verified_without_downloading(
    stack: Stack, outputs: dict[str, Any], tmp_path: Path, endpoint_url
) -> None:
    size = 9 * 1024 * 1024  # over the 8 MiB threshold: two parts
    local = sealed_artifact(tmp_path / "big", size)
    multipart = calls(stack.store.s3, "CreateMultipartUpload")
    gets = calls(stack.store.s3, "GetObject")
    uri = stack.store.put_artifact(local, "artifacts/credit/big")
    # model.onnx and the tarball of it are both over the threshold
    assert sorted(p["Key"] for p in multipart) == [
        "artifacts/credit/big/model.onnx",
        "artifacts/credit/big/model.tar.gz",
    ]
    assert multipart[0]["ChecksumAlgorithm"] == "SHA256"
    assert multipart[0]["SSEKMSKeyId"] == outputs["kms_key_arn"]
    # only the "is there a manifest already?" probe read anything back
    assert [p["Key"] for p in gets] == ["artifacts/credit/big/MANIFEST.json"]
    head = client("s3", endpoint_url).head_object(
        Bucket=outputs["models_bucket"],
        Key="artifacts/credit/big/model.onnx",
        ChecksumMode="ENABLED",
    )
    assert head["ETag"].strip('"').endswith("-2")
    assert head["ChecksumSHA256"].split("-")[0] == composite_sha256(
        local / artifact.ONNX, 8 * 1024 * 1024
    )
    fetched = stack.store.get_artifact(uri, tmp_path / "fetched")
    assert (fetched / artifact.ONNX).read_bytes() == (local / artifact.ONNX).read_bytes()


def test_stored_copy_without_checksum_is_read_back_and_compared(
    stack: Stack, outputs: dict[str, Any], tmp_path: Path
) -> None:
    local = sealed_artifact(tmp_path / "big", 9 * 1024 * 1024)
    stack.store.put_artifact(local, "artifacts/credit/big")
    tampered = bytearray((local / artifact.ONNX).read_bytes())
    tampered[-1] ^= 0xFF  # same size, one byte differs, written without a checksum
    client("s3").put_object(
        Bucket=outputs["models_bucket"], Key="artifacts/credit/big/model.onnx", Body=bytes(tampered)
    )
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx: stored sha256 differs"):
        stack.store.put_artifact(local, "artifacts/credit/big")
