"""The Azure Functions package (`deploy.bundle.build_azure_zip`): what Flex Consumption's
one-deploy takes (the app's files at the root, the project sources the function imports, no
dependencies), deterministic, with requirements that admit what the tests ran, and a
function_app that imports and answers from the unpacked package alone."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from deploy import bundle
from tests.conftest import CREDIT_ROW, REPO

APP_FILES = {"function_app.py", "host.json", "requirements.txt"}
# Imported by the bundled modules only on another cloud's path (the S3 sink and loader).
OTHER_CLOUDS = {"boto3"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_repo(root: Path) -> Path:
    """A copy of the package's sources, so a test can change them without touching the repo."""
    for rel in bundle.azure_sources():
        source = bundle.REPO_ROOT / (
            f"{bundle.AZURE_APP_DIR}/{rel}" if rel in bundle.AZURE_APP_FILES else rel
        )
        target = root / source.relative_to(bundle.REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return root


def test_the_package_holds_the_app_at_its_root_and_the_import_closure(tmp_path) -> None:
    archive = bundle.build_azure_zip(tmp_path)
    assert archive.name == bundle.AZURE_ZIP_NAME
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        names = [info.filename for info in infos]
        for name in APP_FILES:
            expected = (REPO / bundle.AZURE_APP_DIR / name).read_bytes()
            assert zf.read(name) == expected, name
        for rel in [
            "contract/__init__.py", "contract/serving.py", "contract/metrics.py",
            "contract/layout.py", "contract/privacy.py", "contract/emulators.py",
            "deploy/__init__.py", "deploy/inference.py", "deploy/service.py",
            "deploy/capture.py", "deploy/endpoint.py", "deploy/azure_blob.py",
        ]:  # fmt: skip
            assert zf.read(rel) == (REPO / rel).read_bytes(), rel
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
            assert (info.external_attr >> 16) & 0o777 == 0o644, info.filename
    assert names == sorted(names)
    tops = {name.split("/")[0] for name in names}
    assert tops == APP_FILES | {"contract", "deploy"}, tops  # no vendored dependency
    assert not [n for n in names if n.startswith(("deploy/aws_lambda", "deploy/training"))]
    assert not {"deploy/bundle.py", "deploy/server.py", "deploy/container.py"} & set(names)
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]


def test_two_builds_have_the_same_bytes_and_times_or_modes_change_nothing(tmp_path) -> None:
    root = _fake_repo(tmp_path / "repo")
    first = bundle.build_azure_zip(tmp_path / "a", root=root)
    app = root / bundle.AZURE_APP_DIR / "function_app.py"
    os.utime(app, (1_000_000_000, 1_000_000_000))
    app.chmod(0o600)
    second = bundle.build_azure_zip(tmp_path / "b", root=root)
    assert _sha256(first) == _sha256(second)
    assert _sha256(bundle.build_azure_zip(tmp_path / "c")) == _sha256(first)  # the repo's own

    core = root / "deploy" / "endpoint.py"
    core.write_text(core.read_text() + "\n# changed\n")
    assert _sha256(bundle.build_azure_zip(tmp_path / "d", root=root)) != _sha256(first)


def test_a_missing_source_is_an_error_that_names_it(tmp_path) -> None:
    root = _fake_repo(tmp_path / "repo")
    (root / bundle.AZURE_APP_DIR / "host.json").unlink()
    (root / "deploy" / "azure_blob.py").unlink()
    with pytest.raises(FileNotFoundError) as missing:
        bundle.build_azure_zip(tmp_path / "out", root=root)
    assert "deploy/azure_functions/host.json" in str(missing.value)
    assert "deploy/azure_blob.py" in str(missing.value)
    assert not (tmp_path / "out" / bundle.AZURE_ZIP_NAME).exists()


def test_host_json_pins_the_routes_and_bounds_each_invocation() -> None:
    host = json.loads((REPO / bundle.AZURE_APP_DIR / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensions"]["http"]["routePrefix"] == ""  # /health and /predict, no /api
    hours, minutes, seconds = map(int, host["functionTimeout"].split(":"))
    # the load balancer ends an HTTP request after 230 s whatever the timeout says
    assert 0 < hours * 3600 + minutes * 60 + seconds <= 230
    assert host["logging"]["logLevel"]["Function"] == "Information"  # the request lines


def _requirements() -> dict[str, Requirement]:
    text = (REPO / bundle.AZURE_APP_DIR / "requirements.txt").read_text()
    lines = [line.strip() for line in text.splitlines()]
    parsed = [Requirement(line) for line in lines if line and not line.startswith("#")]
    return {r.name: r for r in parsed}


def _pyproject_bounds() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        declared += extra
    return {Requirement(d).name: str(Requirement(d).specifier) for d in declared}


def test_requirements_are_bounded_like_the_project_and_admit_what_the_tests_ran() -> None:
    from importlib import metadata

    requirements = _requirements()
    declared = _pyproject_bounds()
    for name, requirement in requirements.items():
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators and "<" in operators, f"{name}: needs a lower and upper bound"
        assert str(requirement.specifier) == declared[name], (name, declared.get(name))
        installed = metadata.version(name)
        assert requirement.specifier.contains(installed), (name, installed)


def _top_level_imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_requirements_cover_every_package_the_bundled_code_imports(tmp_path) -> None:
    archive = bundle.build_azure_zip(tmp_path)
    imported: set[str] = set()
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if name.endswith(".py"):
                imported |= _top_level_imports(zf.read(name).decode())
    third_party = {
        name.split(".")[0] if not name.startswith("azure.") else ".".join(name.split(".")[:2])
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names | {"contract", "deploy"}
    }
    distributions = {
        "azure.functions": "azure-functions",
        "azure.identity": "azure-identity",
        "azure.storage": "azure-storage-blob",
        "azure.core": "azure-core",
        "numpy": "numpy",
        "onnxruntime": "onnxruntime",
    }
    unknown = third_party - set(distributions) - OTHER_CLOUDS
    assert not unknown, f"imported by the package, not in requirements.txt: {unknown}"
    needed = {distributions[name] for name in third_party - OTHER_CLOUDS}
    assert needed == set(_requirements()), (needed, set(_requirements()))


# Imports function_app as the worker does (its directory first on sys.path), calls its HTTP
# function with a request and a context, and reports the answer and where modules came from.
_RUN = """
import json, sys
import azure.functions as func
import function_app
[function] = [f for f in function_app.app.get_functions() if f.is_http_function()]
class Context:
    invocation_id = "0c8f2a4e-0000-4000-8000-000000000001"
request = func.HttpRequest("POST", "https://app.example/predict", body=sys.argv[1].encode(),
                           headers={"content-type": "application/json",
                                    "x-request-id": "from-the-package"})
response = function.get_user_function()(req=request, context=Context())
ours = {n: getattr(m, "__file__", None) for n, m in sys.modules.items()
        if n.split(".")[0] in ("contract", "deploy", "ml", "infra", "function_app")}
heavy = sorted(n for n in sys.modules if n.split(".")[0] in ("sklearn", "pandas", "scipy", "ml"))
print(json.dumps({"status": response.status_code, "body": response.get_body().decode(),
                  "headers": dict(response.headers), "ours": ours, "heavy": heavy}))
"""


def test_the_unpacked_package_imports_and_answers_a_request(tmp_path, trained_artifact) -> None:
    archive = bundle.build_azure_zip(tmp_path / "out")
    app_root = tmp_path / "wwwroot"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(app_root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "TANDEM_", "PYTHON"))}
    env |= {"PYTHONPATH": str(app_root), "MODEL_URI": str(trained_artifact), "MODEL_VERSION": "5"}
    done = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps({"instances": [CREDIT_ROW]})],
        cwd=app_root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 200, report
    answer = json.loads(report["body"])
    assert answer["request_id"] == "from-the-package" and answer["version"] == 5
    assert report["headers"]["content-type"] == "application/json"
    for name, file in report["ours"].items():
        assert file and file.startswith(str(app_root)), f"{name} came from outside: {file}"
    assert "deploy.endpoint" in report["ours"] and "deploy.aws_lambda" not in report["ours"]
    assert report["heavy"] == [], report["heavy"]


def test_the_bundle_command_builds_the_azure_package(tmp_path) -> None:
    from typer.testing import CliRunner

    from ml.cli import app

    result = CliRunner().invoke(
        app, ["--json", "bundle", "--target", "azure", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    archive = Path(report["path"])
    assert archive == tmp_path / bundle.AZURE_ZIP_NAME
    assert report["sha256"] == _sha256(archive) and report["remote_build"] is True
    assert set(report["files"]) >= APP_FILES


@pytest.mark.parametrize("extra", [["--arch", "x86_64"], ["--python", "3.11"]])
def test_lambda_options_are_refused_for_azure(tmp_path, extra) -> None:
    from typer.testing import CliRunner

    from ml.cli import app

    result = CliRunner().invoke(
        app, ["--json", "bundle", "--target", "azure", *extra, "--out", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert re.search(r"--arch and --python are for --target aws", result.output)
    assert not list(tmp_path.iterdir()), "nothing is built for a refused command"
