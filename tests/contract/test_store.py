"""ArtifactStore: what every stack's store guarantees (ml/clouds/base.py)."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from ml import artifact
from ml.clouds.base import Stack
from ml.errors import ArtifactIntegrityError, ConflictError, NotFoundError

KEY = "artifacts/credit/run-1"


def altered_copy(artifact_dir: Path, name: str, tmp_path: Path) -> bytes:
    """`name` with one byte changed; for model.tar.gz, a well-formed tarball of the same
    files in which model.onnx differs (what SageMaker would deploy)."""
    if name != artifact.TARBALL:
        original = (artifact_dir / name).read_bytes()
        return original[:-1] + bytes([original[-1] ^ 0xFF])
    packed = tmp_path / "altered.tar.gz"
    with tarfile.open(packed, "w:gz") as tar:
        for member in (*artifact.CONTENT, artifact.MANIFEST):
            data = (artifact_dir / member).read_bytes()
            if member == artifact.ONNX:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return packed.read_bytes()


def test_bytes_round_trip_by_key_and_by_uri_last_write_wins(stack: Stack) -> None:
    store = stack.store
    uri = store.put_bytes("runs/credit/a.json", b'{"a": 1}')
    store.put_bytes("runs/credit/b.json", b"{}")
    store.put_bytes("reports/credit/a.html", b"<p>")
    assert uri == store.uri_for("runs/credit/a.json")
    assert store.get_bytes("runs/credit/a.json") == store.get_bytes(uri) == b'{"a": 1}'
    assert store.list_keys("runs/") == ["runs/credit/a.json", "runs/credit/b.json"]
    assert store.list_keys("") == [
        "reports/credit/a.html",
        "runs/credit/a.json",
        "runs/credit/b.json",
    ]
    store.put_bytes("runs/credit/a.json", b"second")
    assert store.get_bytes("runs/credit/a.json") == b"second"


def test_absent_keys(stack: Stack, tmp_path: Path) -> None:
    store = stack.store
    with pytest.raises(NotFoundError):
        store.get_bytes("runs/credit/nope.json")
    with pytest.raises(NotFoundError):
        store.get_artifact(store.uri_for("artifacts/credit/nope"), tmp_path / "nope")
    assert store.list_keys("runs/") == []
    assert store.list_keys("") == []
    assert store.exists("runs/credit/nope.json") is False
    assert store.exists(store.uri_for("runs/credit/nope.json")) is False


def test_exists_by_key_and_by_uri(stack: Stack) -> None:
    uri = stack.store.put_bytes("runs/credit/a.json", b"{}")
    assert stack.store.exists("runs/credit/a.json") is True
    assert stack.store.exists(uri) is True


def test_put_artifact_round_trip_and_idempotent(
    stack: Stack, artifact_dir: Path, tmp_path: Path
) -> None:
    uri = stack.store.put_artifact(artifact_dir, KEY)
    assert uri == stack.store.uri_for(KEY)
    assert stack.store.put_artifact(artifact_dir, KEY) == uri  # the same content again
    fetched = stack.store.get_artifact(uri, tmp_path / "fetched")
    assert artifact.verify(fetched) == artifact.verify(artifact_dir)
    for name in (*artifact.CONTENT, artifact.MANIFEST, artifact.TARBALL):
        assert (fetched / name).read_bytes() == (artifact_dir / name).read_bytes(), name
    assert artifact.load(fetched).card["run_id"] == "session-run"
    assert stack.store.list_keys("artifacts/") == sorted(
        f"{KEY}/{name}" for name in (*artifact.CONTENT, artifact.MANIFEST, artifact.TARBALL)
    )


def test_different_content_under_a_stored_key_conflicts(
    stack: Stack, artifact_dir: Path, tmp_path: Path
) -> None:
    stack.store.put_artifact(artifact_dir, KEY)
    other = tmp_path / "other"
    shutil.copytree(artifact_dir, other)
    card = json.loads((other / artifact.CARD).read_text())
    artifact.write_json(other / artifact.CARD, {**card, "run_id": "a-different-run"})
    artifact.seal(other)
    with pytest.raises(ConflictError, match=re.escape(KEY)):
        stack.store.put_artifact(other, KEY)
    fetched = stack.store.get_artifact(stack.store.uri_for(KEY), tmp_path / "fetched")
    assert artifact.load(fetched).card["run_id"] == "session-run"  # the first one stays
    assert stack.store.put_artifact(other, "artifacts/credit/run-2")  # elsewhere is fine


def test_a_local_artifact_that_fails_its_manifest_is_not_stored(
    stack: Stack, artifact_dir: Path
) -> None:
    (artifact_dir / artifact.BASELINE).write_text("{}")
    with pytest.raises(ArtifactIntegrityError, match=re.escape(artifact.BASELINE)):
        stack.store.put_artifact(artifact_dir, KEY)
    assert stack.store.list_keys("artifacts/") == []


@pytest.mark.parametrize(
    "altered", [artifact.ONNX, artifact.CARD, artifact.BASELINE, artifact.TARBALL]
)
def test_a_stored_file_altered_after_storing_is_refused_and_named(
    stack: Stack, artifact_dir: Path, tmp_path: Path, altered: str
) -> None:
    uri = stack.store.put_artifact(artifact_dir, KEY)
    stack.store.put_bytes(f"{KEY}/{altered}", altered_copy(artifact_dir, altered, tmp_path))
    with pytest.raises(ArtifactIntegrityError, match=re.escape(altered)):
        stack.store.get_artifact(uri, tmp_path / "fetched")


def test_storing_the_genuine_artifact_again_does_not_vouch_for_a_tampered_copy(
    stack: Stack, artifact_dir: Path
) -> None:
    stack.store.put_artifact(artifact_dir, KEY)
    stack.store.put_bytes(f"{KEY}/{artifact.ONNX}", b"not a model")
    with pytest.raises(ArtifactIntegrityError, match=re.escape(artifact.ONNX)):
        stack.store.put_artifact(artifact_dir, KEY)
