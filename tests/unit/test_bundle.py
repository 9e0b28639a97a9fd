"""The Lambda code archive is deterministic and carries a working entry point."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploy import bundle


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_repo(root: Path, with_inference: bool) -> Path:
    """A copy of the Lambda sources, so a test can change them without touching the repo."""
    for rel in bundle.lambda_sources():
        if rel == "deploy/inference.py":
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bundle.REPO_ROOT / rel, root / rel)
    if with_inference:
        (root / "deploy" / "inference.py").write_text("VERSION = 1\n")
    return root


def test_two_builds_have_the_same_sha256(tmp_path):
    first = bundle.build_lambda_zip(tmp_path / "a")
    second = bundle.build_lambda_zip(tmp_path / "b")
    assert first.name == bundle.LAMBDA_ZIP_NAME
    assert _sha256(first) == _sha256(second), "two builds of the same sources differ"


def test_file_times_and_modes_do_not_change_the_archive(tmp_path):
    root = _fake_repo(tmp_path / "repo", with_inference=False)
    before = _sha256(bundle.build_lambda_zip(tmp_path / "a", root=root))
    handler = root / "deploy" / "aws_lambda" / "handler.py"
    os.utime(handler, (1_000_000_000, 1_000_000_000))
    handler.chmod(0o600)
    after = _sha256(bundle.build_lambda_zip(tmp_path / "b", root=root))
    assert before == after, "mtime/mode of a source changed the archive"


def test_changing_the_code_changes_the_hash(tmp_path):
    root = _fake_repo(tmp_path / "repo", with_inference=False)
    before = bundle.sha256_base64(bundle.build_lambda_zip(tmp_path / "a", root=root))
    handler = root / "deploy" / "aws_lambda" / "handler.py"
    handler.write_text(handler.read_text() + "\n# changed\n")
    after = bundle.sha256_base64(bundle.build_lambda_zip(tmp_path / "b", root=root))
    assert before != after, "a code change must change source_code_hash, or it is never deployed"


def test_archive_holds_the_handler_package_sorted_with_fixed_metadata(tmp_path):
    archive = bundle.build_lambda_zip(tmp_path)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert "deploy/aws_lambda/handler.py" in names, names
        assert {"deploy/__init__.py", "deploy/aws_lambda/__init__.py"} <= set(names), names
        assert names == sorted(names), names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")], names
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0), (info.filename, info.date_time)
            assert (info.external_attr >> 16) & 0o777 == 0o644, (info.filename, info.external_attr)
        handler_src = (bundle.REPO_ROOT / "deploy/aws_lambda/handler.py").read_bytes()
        assert zf.read("deploy/aws_lambda/handler.py") == handler_src
    module, function = bundle.LAMBDA_HANDLER.rsplit(".", 1)
    assert module.replace(".", "/") + ".py" in names, (bundle.LAMBDA_HANDLER, names)
    assert function == "handler"


def test_inference_module_is_included_when_present(tmp_path):
    with_it = bundle.build_lambda_zip(tmp_path / "a", root=_fake_repo(tmp_path / "r1", True))
    without = bundle.build_lambda_zip(tmp_path / "b", root=_fake_repo(tmp_path / "r2", False))
    assert "deploy/inference.py" in zipfile.ZipFile(with_it).namelist()
    assert "deploy/inference.py" not in zipfile.ZipFile(without).namelist()


def test_missing_handler_is_an_error_that_names_it(tmp_path):
    root = _fake_repo(tmp_path / "repo", with_inference=False)
    (root / "deploy" / "aws_lambda" / "handler.py").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("deploy/aws_lambda/handler.py")):
        bundle.build_lambda_zip(tmp_path / "out", root=root)


@pytest.mark.parametrize(
    ("model_uri", "status", "body"),
    [
        (None, 503, {"error": "no model deployed yet"}),
        ("", 503, {"error": "no model deployed yet"}),
        ("s3://m/churn/3/model.tar.gz", 200, {"model_uri": "s3://m/churn/3/model.tar.gz"}),
    ],
)
def test_the_entry_point_in_the_archive_answers(tmp_path, model_uri, status, body):
    """Import the handler from the unpacked archive alone, as Lambda would."""
    unpacked = tmp_path / "task"
    with zipfile.ZipFile(bundle.build_lambda_zip(tmp_path)) as zf:
        zf.extractall(unpacked)
    module, function = bundle.LAMBDA_HANDLER.rsplit(".", 1)
    script = (
        "import importlib, json, sys\n"
        f"m = importlib.import_module({module!r})\n"
        "assert m.__file__.startswith(sys.argv[1]), m.__file__\n"
        f"print(json.dumps(m.{function}({{}}, None)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MODEL_URI"}
    env["PYTHONPATH"] = str(unpacked)
    if model_uri is not None:
        env["MODEL_URI"] = model_uri
    out = subprocess.run(
        [sys.executable, "-c", script, str(unpacked)],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    response = json.loads(out.stdout)
    assert response["statusCode"] == status, response
    assert response["headers"]["content-type"] == "application/json", response
    assert body.items() <= json.loads(response["body"]).items(), response
