"""Model.load from every source an endpoint meets: a directory, a model.tar.gz (or a
directory holding one, as SageMaker mounts it), s3:// (moto) and http(s):// (a real loopback
server); each verifies MANIFEST.json and refuses a tampered file by name."""

from __future__ import annotations

import functools
import gzip
import io
import json
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy.inference import IntegrityError, Model
from ml import artifact
from tests.conftest import CREDIT_ROW

ROW = CREDIT_ROW
PAYLOAD = {"instances": [ROW]}


@pytest.fixture(scope="module")
def expected(trained_artifact: Path) -> dict:
    return Model.load(trained_artifact).predict_payload(PAYLOAD)


def tampered_tarball(source: Path, dest: Path, name: str = artifact.ONNX) -> Path:
    """model.tar.gz with one file's bytes changed and the original MANIFEST.json."""
    files = {n: (source / n).read_bytes() for n in (*artifact.CONTENT, artifact.MANIFEST)}
    files[name] = files[name] + b" "
    dest.mkdir(parents=True, exist_ok=True)
    (dest / artifact.TARBALL).write_bytes(artifact.targz(files))
    return dest / artifact.TARBALL


def test_a_directory(trained_artifact: Path, expected: dict) -> None:
    model = Model.load(trained_artifact, name="credit", version=2)
    assert (model.name, model.version) == ("credit", 2)
    assert model.predict_payload(PAYLOAD) == {**expected, "version": 2}


@pytest.mark.parametrize("name", [artifact.ONNX, artifact.CARD, artifact.BASELINE])
def test_a_tampered_directory_is_refused_by_file_name(artifact_copy: Path, name: str) -> None:
    with (artifact_copy / name).open("ab") as handle:
        handle.write(b"\n")
    with pytest.raises(IntegrityError, match=rf"^{name}: sha256 differs"):
        Model.load(artifact_copy)


def test_a_tarball_and_a_directory_holding_only_one(
    trained_artifact: Path, tmp_path: Path, expected: dict
) -> None:
    tarball = trained_artifact / artifact.TARBALL
    cache = tmp_path / "cache"
    assert Model.load(tarball, cache_dir=cache).predict_payload(PAYLOAD) == expected
    assert (cache / artifact.MANIFEST).is_file()
    mounted = tmp_path / "opt-ml-model"
    mounted.mkdir()
    shutil.copy(tarball, mounted)
    assert Model.load(mounted, cache_dir=tmp_path / "c2").predict_payload(PAYLOAD) == expected


def test_without_a_cache_what_was_unpacked_is_removed_once_loaded(
    trained_artifact: Path, tmp_path: Path, expected: dict, monkeypatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model = Model.load(trained_artifact / artifact.TARBALL)
    assert list(scratch.iterdir()) == []  # the model is in memory; its files are gone
    assert model.predict_payload(PAYLOAD) == expected


def test_a_tampered_tarball_is_refused_by_file_name(trained_artifact: Path, tmp_path: Path) -> None:
    tarball = tampered_tarball(trained_artifact, tmp_path / "bad", artifact.CARD)
    with pytest.raises(IntegrityError, match=rf"^{artifact.CARD}: sha256 differs"):
        Model.load(tarball, cache_dir=tmp_path / "cache")


def test_a_damaged_tarball_is_refused(trained_artifact: Path, tmp_path: Path) -> None:
    damaged = tmp_path / artifact.TARBALL
    damaged.write_bytes((trained_artifact / artifact.TARBALL).read_bytes()[:-40])
    with pytest.raises(IntegrityError, match=artifact.TARBALL):
        Model.load(damaged, cache_dir=tmp_path / "cache")


def test_a_tarball_cannot_write_outside_its_directory(
    trained_artifact: Path, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in (*artifact.CONTENT, artifact.MANIFEST):
            tar.add(trained_artifact / name, arcname=name)
        evil = tarfile.TarInfo("../escaped.txt")
        evil.size = 3
        tar.addfile(evil, io.BytesIO(b"bad"))
    tarball = tmp_path / "in" / artifact.TARBALL
    tarball.parent.mkdir()
    tarball.write_bytes(gzip.compress(buffer.getvalue()))
    Model.load(tarball, cache_dir=tmp_path / "in" / "cache")
    assert not (tmp_path / "in" / "escaped.txt").exists()


def test_nothing_there(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Model.load(tmp_path / "absent")


@pytest.mark.parametrize(
    "uri", ["ftp://host/model.tar.gz", "http://example.com/model", "gs://bucket/model"]
)
def test_unsupported_sources_are_refused_before_any_download(uri: str) -> None:
    with pytest.raises(ValueError, match="unsupported model source"):
        Model.load(uri)


# --- s3:// (moto) -----------------------------------------------------------------------------


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    import boto3
    from moto import mock_aws

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(
            Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        yield s3


def test_s3(s3_bucket, trained_artifact: Path, tmp_path: Path, expected: dict) -> None:
    key = "models/credit/v1/model.tar.gz"
    s3_bucket.upload_file(str(trained_artifact / artifact.TARBALL), "models", key)
    by_prefix = Model.load("s3://models/models/credit/v1", cache_dir=tmp_path / "a")
    by_key = Model.load(f"s3://models/{key}", cache_dir=tmp_path / "b")
    assert by_prefix.predict_payload(PAYLOAD) == by_key.predict_payload(PAYLOAD) == expected


def test_s3_tampered(s3_bucket, trained_artifact: Path, tmp_path: Path) -> None:
    tarball = tampered_tarball(trained_artifact, tmp_path / "bad")
    s3_bucket.upload_file(str(tarball), "models", "bad/model.tar.gz")
    with pytest.raises(IntegrityError, match=rf"^{artifact.ONNX}: sha256 differs"):
        Model.load("s3://models/bad", cache_dir=tmp_path / "cache")


# --- http(s):// (a real loopback server) ------------------------------------------------------


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http(web_root, trained_artifact: Path, tmp_path: Path, expected: dict) -> None:
    root, url = web_root
    (root / "credit" / "v1").mkdir(parents=True)
    shutil.copy(trained_artifact / artifact.TARBALL, root / "credit" / "v1")
    model = Model.load(f"{url}/credit/v1", cache_dir=tmp_path / "cache")
    assert model.predict_payload(PAYLOAD) == expected
    model = Model.load(f"{url}/credit/v1/model.tar.gz", cache_dir=tmp_path / "c2")
    assert model.predict_payload(PAYLOAD) == expected


def test_http_tampered_and_missing(web_root, trained_artifact: Path, tmp_path: Path) -> None:
    root, url = web_root
    tampered_tarball(trained_artifact, root / "bad", artifact.BASELINE)
    with pytest.raises(IntegrityError, match=rf"^{artifact.BASELINE}: sha256 differs"):
        Model.load(f"{url}/bad", cache_dir=tmp_path / "cache")
    with pytest.raises(OSError, match="404"):
        Model.load(f"{url}/absent", cache_dir=tmp_path / "c2")


def test_the_card_records_the_layout_it_was_built_with(trained_artifact: Path) -> None:
    card = json.loads((trained_artifact / artifact.CARD).read_text())
    numeric = ["age", "income", "debt_ratio", "late_payments", "credit_lines"]
    assert card["onnx_inputs"] == [
        {"name": "numeric", "dtype": "float32", "columns": numeric},
        {"name": "employment", "dtype": "string", "columns": ["employment"]},
    ]
    assert card["classes"] == [0, 1] and card["task"] == "binary"
    model = Model.load(trained_artifact)
    shapes = {i.name: (i.type, i.shape[1]) for i in model.session.get_inputs()}
    assert shapes == {"numeric": ("tensor(float)", 5), "employment": ("tensor(string)", 1)}
