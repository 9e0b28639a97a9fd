"""The Lambda archive is deterministic, holds the handler's import closure and nothing of the
training stack, and its handler answers a /predict event when extracted, as Lambda runs it."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy
import onnxruntime
import pytest

from deploy import bundle
from tests.conftest import CREDIT_ROW

FORBIDDEN = ("sklearn", "scikit_learn", "pandas", "boto3", "botocore", "scipy", "ml", "infra")
ROW = CREDIT_ROW


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_repo(root: Path) -> Path:
    """A copy of the Lambda sources, so a test can change them without touching the repo."""
    for rel in bundle.lambda_sources():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bundle.REPO_ROOT / rel, root / rel)
    return root


def test_two_builds_have_the_same_sha256(tmp_path):
    first = bundle.build_lambda_zip(tmp_path / "a", dependencies=False)
    second = bundle.build_lambda_zip(tmp_path / "b", dependencies=False)
    assert first.name == bundle.LAMBDA_ZIP_NAME
    assert _sha256(first) == _sha256(second), "two builds of the same sources differ"


def test_file_times_and_modes_do_not_change_the_archive(tmp_path):
    root = _fake_repo(tmp_path / "repo")
    before = _sha256(bundle.build_lambda_zip(tmp_path / "a", dependencies=False, root=root))
    handler = root / "deploy" / "aws_lambda" / "handler.py"
    os.utime(handler, (1_000_000_000, 1_000_000_000))
    handler.chmod(0o600)
    after = _sha256(bundle.build_lambda_zip(tmp_path / "b", dependencies=False, root=root))
    assert before == after, "mtime/mode of a source changed the archive"


def test_changing_the_code_changes_the_hash(tmp_path):
    root = _fake_repo(tmp_path / "repo")
    build = bundle.build_lambda_zip
    before = bundle.sha256_base64(build(tmp_path / "a", dependencies=False, root=root))
    core = root / "deploy" / "inference.py"
    core.write_text(core.read_text() + "\n# changed\n")
    after = bundle.sha256_base64(build(tmp_path / "b", dependencies=False, root=root))
    assert before != after, "a code change must change source_code_hash, or it is never deployed"


def test_the_archive_holds_the_import_closure_sorted_with_fixed_metadata(tmp_path):
    archive = bundle.build_lambda_zip(tmp_path, dependencies=False, bytecode=False)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        for rel in [
            "contract/__init__.py", "contract/serving.py", "contract/metrics.py",
            "contract/privacy.py", "contract/layout.py", "deploy/__init__.py",
            "deploy/inference.py", "deploy/service.py", "deploy/capture.py",
            "deploy/aws_lambda/__init__.py", "deploy/aws_lambda/handler.py",
            "deploy/aws_lambda/emf.py",
        ]:  # fmt: skip
            assert rel in names, (rel, names)
            assert zf.read(rel) == (bundle.REPO_ROOT / rel).read_bytes(), rel
        assert names == sorted(names), names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")], names
        assert not [n for n in names if n.split("/")[0] in FORBIDDEN], names
        # no builder of archives, no server, no training code rides along
        assert not {"deploy/bundle.py", "deploy/server.py"} & set(names), names
        assert not [n for n in names if n.startswith("deploy/training")], names
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0), (info.filename, info.date_time)
            assert (info.external_attr >> 16) & 0o777 == 0o644, (info.filename, info.external_attr)
    module, function = bundle.LAMBDA_HANDLER.rsplit(".", 1)
    assert module.replace(".", "/") + ".py" in names, (bundle.LAMBDA_HANDLER, names)
    assert function == "handler"


def test_built_by_the_runtime_python_the_modules_ship_compiled(tmp_path):
    """The task root is read-only: without pycs in the archive every cold start compiles."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    first = bundle.build_lambda_zip(tmp_path / "a", dependencies=False, python=here)
    second = bundle.build_lambda_zip(tmp_path / "b", dependencies=False, python=here)
    assert _sha256(first) == _sha256(second), "compiled modules made the build differ"
    names = set(zipfile.ZipFile(first).namelist())
    sources = [n for n in names if n.endswith(".py")]
    assert sources and all(importlib.util.cache_from_source(n) in names for n in sources)
    assert bundle.bundle_report(first)["compiled"] is True
    plain = bundle.build_lambda_zip(tmp_path / "c", dependencies=False, python=here, bytecode=False)
    assert bundle.bundle_report(plain)["compiled"] is False

    # the compiled module is what imports (never checked against its source): a changed
    # source in the extracted archive is not even read
    task = tmp_path / "task"
    zipfile.ZipFile(first).extractall(task)
    (task / "contract" / "serving.py").write_text("raise RuntimeError('source was read')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [sys.executable, "-S", "-c", "import contract.serving as s; print(s.PREDICT_PATH)"],
        cwd=task, env={**env, "PYTHONPATH": str(task)}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "/predict", done.stderr


def test_bytecode_for_another_python_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs that interpreter"):
        bundle.build_lambda_zip(tmp_path, dependencies=False, python="3.9", bytecode=True)


def test_a_missing_source_is_an_error_that_names_it(tmp_path):
    root = _fake_repo(tmp_path / "repo")
    (root / "deploy" / "aws_lambda" / "handler.py").unlink()
    (root / "deploy" / "service.py").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("deploy/aws_lambda/handler.py")):
        bundle.build_lambda_zip(tmp_path / "out", dependencies=False, root=root)
    with pytest.raises(FileNotFoundError, match=re.escape("deploy/service.py")):
        bundle.build_lambda_zip(tmp_path / "out", dependencies=False, root=root)


def test_the_report_counts_sizes_and_packages(tmp_path):
    archive = bundle.build_lambda_zip(tmp_path, dependencies=False)
    report = bundle.bundle_report(archive)
    with zipfile.ZipFile(archive) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
    assert report["zipped_bytes"] == archive.stat().st_size
    assert report["unzipped_bytes"] == unzipped > report["zipped_bytes"]
    assert [p["name"] for p in report["top"]] == ["deploy", "contract"]
    assert sum(p["unzipped_bytes"] for p in report["top"]) == unzipped
    assert report["within_budget"] is True


@pytest.mark.parametrize(("arch", "python"), [("sparc", "3.12"), ("arm64", "three")])
def test_a_bad_target_is_refused_before_any_download(tmp_path, arch, python):
    with pytest.raises(ValueError, match=r"^(arch|python) must"):
        bundle.build_lambda_zip(tmp_path, arch=arch, python=python, wheel_cache=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def _event(body: dict[str, Any]) -> dict[str, Any]:
    text = base64.b64encode(json.dumps(body).encode()).decode()
    return {
        "version": "2.0",
        "rawPath": "/predict",
        "headers": {"content-type": "application/json", "x-request-id": "from-the-archive"},
        "requestContext": {"http": {"method": "POST", "path": "/predict"}, "stage": "$default"},
        "body": text,
        "isBase64Encoded": True,
    }


# Imports the handler as Lambda would (by LAMBDA_HANDLER), answers one event, and reports
# where every project module came from and which heavy packages were imported.
_RUN = """
import importlib, json, sys
module, function = sys.argv[2].rsplit(".", 1)
answer = getattr(importlib.import_module(module), function)(json.loads(sys.argv[3]), None)
ours = {n: getattr(m, "__file__", None) for n, m in sys.modules.items()
        if n.split(".")[0] in ("contract", "deploy", "ml", "infra")}
heavy = sorted(n for n in sys.modules if n.split(".")[0] in ("sklearn", "pandas", "scipy"))
print(json.dumps({"answer": answer, "ours": ours, "heavy": heavy, "path": sys.path}))
"""


def _run_extracted(archive: Path, where: Path, model: Path, extra_path: list[str]) -> dict:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(where)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "TANDEM_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join([str(where), *extra_path])
    env["MODEL_URI"] = str(model)
    env["MODEL_VERSION"] = "5"
    done = subprocess.run(
        # -S: no site-packages, no editable install of this repository; only PYTHONPATH
        [sys.executable, "-S", "-c", _RUN, str(where), bundle.LAMBDA_HANDLER,
         json.dumps(_event({"instances": [ROW]}))],
        cwd=where, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name, file in report["ours"].items():
        assert file and file.startswith(str(where)), (
            f"{name} was imported from outside the archive: {file}"
        )
    assert report["heavy"] == [], report["heavy"]
    return report


def test_the_extracted_archive_answers_a_predict_event(tmp_path, trained_artifact):
    """The code-only archive, with this environment's numpy and onnxruntime beside it."""
    archive = bundle.build_lambda_zip(tmp_path / "out", dependencies=False)
    site = {str(Path(numpy.__file__).parents[1]), str(Path(onnxruntime.__file__).parents[1])}
    report = _run_extracted(archive, tmp_path / "task", trained_artifact, sorted(site))
    response = report["answer"]
    assert response["statusCode"] == 200, response
    answer = json.loads(response["body"])
    assert answer["request_id"] == "from-the-archive" and answer["version"] == 5
    assert len(answer["predictions"]) == 1
    assert "deploy.aws_lambda.emf" in report["ours"] and "ml" not in report["ours"]


def _pypi_reachable() -> bool:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/numpy/", timeout=10):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_the_archive_with_its_dependencies_runs_on_its_own(tmp_path, trained_artifact, monkeypatch):
    """A real download: numpy + onnxruntime wheels for this machine's platform and Python,
    pinned to this environment's versions; the extracted archive alone answers /predict."""
    if not _pypi_reachable():
        pytest.skip("the package index is not reachable")
    arch = {"x86_64": "x86_64", "aarch64": "arm64"}.get(os.uname().machine)
    if arch is None:
        pytest.skip(f"no Lambda architecture for {os.uname().machine}")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    cache = tmp_path / "wheels"
    first = bundle.build_lambda_zip(tmp_path / "a", python=python, arch=arch, wheel_cache=cache)
    names = zipfile.ZipFile(first).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {"numpy", "onnxruntime", "deploy", "contract"} <= tops, tops
    assert f"numpy-{numpy.__version__}.dist-info/METADATA" in names, "numpy is not pinned"
    assert f"onnxruntime-{onnxruntime.__version__}.dist-info/METADATA" in names
    assert not [t for t in tops if t.split("-")[0].split(".")[0] in FORBIDDEN], tops
    assert not [n for n in names if n.startswith("bin/") or n.endswith("/RECORD")]
    # built by the runtime's Python: every module ships compiled
    assert all(importlib.util.cache_from_source(n) in names for n in names if n.endswith(".py"))
    assert not [n for n in names if "/tests/" in n or n.startswith("onnxruntime/transformers")]

    # a second build reuses the installed wheels: with the index made unreachable (and the
    # archive zipped again, not copied) it still succeeds, with the same bytes
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    shutil.rmtree(cache / "archives")
    second = bundle.build_lambda_zip(tmp_path / "b", python=python, arch=arch, wheel_cache=cache)
    assert _sha256(first) == _sha256(second), "a rebuild from the cache differs"
    third = bundle.build_lambda_zip(tmp_path / "c", python=python, arch=arch, wheel_cache=cache)
    assert _sha256(third) == _sha256(first)

    report = _run_extracted(first, tmp_path / "task", trained_artifact, [])
    response = report["answer"]
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["predictions"] in ([0], [1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "gcp"], "expected 'aws' (Lambda) or 'azure'"),
        (["--target", "aws", "--arch", "sparc"], "arm64, x86_64"),
    ],
)
def test_the_bundle_command_refuses_what_it_cannot_build(tmp_path, args, message):
    from typer.testing import CliRunner

    from ml.cli import app

    result = CliRunner().invoke(app, ["--json", "bundle", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in json.loads(result.output)["error"]
    assert not list(tmp_path.iterdir()), "nothing is built for a refused target"
