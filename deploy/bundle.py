"""Build the deployment archives for the endpoints.

The Lambda archive holds the handler's import closure of project sources, in the package
layout (``deploy/aws_lambda/handler.py``, ``deploy/inference.py``, ``contract/...``), so the
handler imports the same modules in Lambda as it does locally, and ``LAMBDA_HANDLER`` is the
one place that names the entry point. With ``dependencies=True`` it also holds numpy and
onnxruntime, pinned to the versions of the environment that builds it, as wheels for the
Lambda runtime's Python and architecture; nothing else (no scikit-learn, pandas or boto3:
the Lambda runtime ships boto3, the only other thing the core may import, for s3:// models).

Archives are deterministic: entries are sorted and carry a fixed timestamp and mode, and
what pip writes per install (scripts with the builder's interpreter path, RECORD, INSTALLER)
is left out, so building the same sources twice gives the same bytes and the same sha256,
and ``pulumi up`` only uploads new code when the code really changed.

Installed dependencies are cached under ``build/wheels/<key>`` (the key names the pins, the
platform and the Python), so a second build needs no network.

When the building interpreter is the runtime's Python (``bytecode=None``, the default), every
module also ships compiled (``__pycache__/*.cpython-3XY.pyc``, unchecked-hash, so the bytes
depend on the source alone): the task root is read-only, so without them each cold start
compiles every module it imports (numpy alone has hundreds) and cannot keep the result.

The Azure Functions package (``build_azure_zip``) is what Flex Consumption's one-deploy takes
with a remote build: ``function_app.py``, ``host.json`` and ``requirements.txt`` at the root,
beside the project packages the function imports (``deploy/`` and ``contract/``), and no
dependencies: the platform's build installs ``requirements.txt`` for the app's own runtime
(``az functionapp deployment source config-zip --build-remote true``, or the one-deploy API
with ``RemoteBuild=true``). A package put straight into the deployment container is run as it
is, unbuilt, and cannot import numpy. It is deterministic like the Lambda archive.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

DEPLOY_DIR = Path(__file__).resolve().parent
REPO_ROOT = DEPLOY_DIR.parent

LAMBDA_ZIP_NAME = "tandem-lambda.zip"
#: The Lambda ``handler`` setting: module path inside the archive, then the function.
LAMBDA_HANDLER = "deploy.aws_lambda.handler.handler"

# The handler's import closure of project sources (relative to the repository root): the
# whole stdlib-only vocabulary, the core, the Service, the capture and the Lambda package.
_LAMBDA_GLOBS = ("contract/*.py", "deploy/aws_lambda/*.py")
_LAMBDA_REQUIRED = (
    "contract/__init__.py",
    "deploy/__init__.py",
    "deploy/aws_lambda/__init__.py",
    "deploy/aws_lambda/handler.py",
    "deploy/aws_lambda/emf.py",
    "deploy/inference.py",
    "deploy/service.py",
    "deploy/capture.py",
    "deploy/endpoint.py",
    "deploy/azure_blob.py",  # the core reads a blob URL with it (standard library until then)
)

AZURE_ZIP_NAME = "tandem-function.zip"
#: Where the function app's own files live in the repository.
AZURE_APP_DIR = "deploy/azure_functions"
#: The files Flex Consumption looks for at the package's root.
AZURE_APP_FILES = ("function_app.py", "host.json", "requirements.txt")
# The function's import closure of project sources: the vocabulary, the core, the Service, the
# capture, the shared endpoint state and Blob access (no Lambda code, no builder, no server).
_AZURE_GLOBS = ("contract/*.py",)
_AZURE_REQUIRED = (
    "contract/__init__.py",
    "deploy/__init__.py",
    "deploy/inference.py",
    "deploy/service.py",
    "deploy/capture.py",
    "deploy/endpoint.py",
    "deploy/azure_blob.py",
)

#: What the core imports beyond the standard library (boto3 is in the Lambda runtime).
LAMBDA_DEPENDENCIES = ("numpy", "onnxruntime")
#: onnxruntime publishes no manylinux2014 wheel; these are the tags it does publish.
PLATFORMS = {"arm64": "manylinux_2_28_aarch64", "x86_64": "manylinux_2_28_x86_64"}
WHEELS_DIR = REPO_ROOT / "build" / "wheels"
_MARKER = ".complete"  # written last in a cache entry: an entry without it is not used

# Left out of the installed dependencies: never imported by the runtime, or different per
# install. onnxruntime's tooling packages (model conversion and optimisation) need onnx,
# torch or sympy, none of which ships; numpy's type stubs and test suites serve developers.
_DROP_DIRS = frozenset({"__pycache__", "tests"})
_DROP_TOP = frozenset(
    {
        "onnxruntime/transformers",
        "onnxruntime/quantization",
        "onnxruntime/tools",
        "onnxruntime/datasets",
        "onnxruntime/backend",
    }
)
_DROP_SUFFIXES = (".pyc", ".pyi")
_DROP_DIST_INFO = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})

# Sizes Lambda allows (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html)
# and Tandem's own budget, unzipped.
LAMBDA_UNZIPPED_LIMIT = 250 * 1000 * 1000
LAMBDA_DIRECT_UPLOAD_LIMIT = 50 * 1000 * 1000  # zipped; a larger archive goes through S3
UNZIPPED_BUDGET = 140 * 1000 * 1000

# The earliest timestamp a zip entry can hold (MS-DOS epoch); any fixed value would do.
_FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# Regular file, rw-r--r--: Lambda needs the files world-readable
# (https://docs.aws.amazon.com/lambda/latest/dg/troubleshooting-deployment.html).
_FILE_MODE = 0o100644
# 6, not 9: on numpy + onnxruntime level 9 takes twice as long for a 0.2% smaller archive
_COMPRESS_LEVEL = 6
_KEEP_ARCHIVES = 4  # archives kept in the cache (each a code version's build)


def lambda_sources(root: Path = REPO_ROOT) -> list[str]:
    """The archive paths of the Lambda code, sorted; raises if a required file is missing."""
    missing = [rel for rel in _LAMBDA_REQUIRED if not (root / rel).is_file()]
    if missing:
        raise FileNotFoundError(f"Lambda sources missing under {root}: {', '.join(missing)}")
    found = {p.relative_to(root).as_posix() for g in _LAMBDA_GLOBS for p in root.glob(g)}
    return sorted(found | set(_LAMBDA_REQUIRED))


def azure_sources(root: Path = REPO_ROOT) -> dict[str, Path]:
    """The Azure package's files, archive name -> source: the app's files at the root, then the
    project sources in the package layout. Raises if a required file is missing."""
    app = {name: root / AZURE_APP_DIR / name for name in AZURE_APP_FILES}
    sources = {rel: root / rel for rel in _AZURE_REQUIRED}
    missing = [
        path.relative_to(root).as_posix() for path in [*app.values(), *sources.values()]
        if not path.is_file()
    ]  # fmt: skip
    if missing:
        raise FileNotFoundError(
            f"Azure function sources missing under {root}: {', '.join(missing)}"
        )
    found = {p.relative_to(root).as_posix(): p for g in _AZURE_GLOBS for p in root.glob(g)}
    return app | dict(sorted((sources | found).items()))


def build_azure_zip(dest_dir: str | os.PathLike[str], *, root: Path = REPO_ROOT) -> Path:
    """Build the Azure Functions package (Flex Consumption, remote build; see the module doc)
    in ``dest_dir`` and return its path. Sources only: nothing is downloaded."""
    return write_deterministic_zip(Path(dest_dir) / AZURE_ZIP_NAME, azure_sources(root))


def write_deterministic_zip(dest: Path, files: dict[str, Path]) -> Path:
    """Write ``files`` (archive name -> source path) to ``dest`` with stable bytes.

    Written to a temporary file first and renamed, so a reader never sees half an archive.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for arcname in sorted(files):
                info = zipfile.ZipInfo(arcname, date_time=_FIXED_DATE_TIME)
                info.external_attr = _FILE_MODE << 16
                info.create_system = 3  # Unix, so the mode above is honoured
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, files[arcname].read_bytes(), compresslevel=_COMPRESS_LEVEL)
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def build_lambda_zip(
    dest_dir: str | os.PathLike[str],
    *,
    dependencies: bool = True,
    python: str = "3.12",
    arch: str = "arm64",
    root: Path = REPO_ROOT,
    wheel_cache: str | os.PathLike[str] | None = None,
    bytecode: bool | None = None,
) -> Path:
    """Build the inference Lambda's archive in ``dest_dir`` and return its path.

    ``dependencies=False`` ships the project sources only (fast, no network: for tests that
    only need an archive to point at). Otherwise numpy and onnxruntime for ``python`` and
    ``arch`` come from the cache in ``wheel_cache`` (default ``build/wheels``), installed
    there by pip on the first build. ``bytecode`` ships compiled modules too; by default
    when this interpreter is ``python`` (only it can compile for that runtime)."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if bytecode is None:
        bytecode = python == here
    elif bytecode and python != here:
        raise ValueError(f"bytecode for Python {python} needs that interpreter; this is {here}")
    files = {rel: root / rel for rel in lambda_sources(root)}
    dest = Path(dest_dir) / LAMBDA_ZIP_NAME
    with tempfile.TemporaryDirectory(prefix="tandem-pyc-") as compiled:
        if not dependencies:
            if bytecode:
                files |= _compiled(files, Path(compiled))
            return write_deterministic_zip(dest, files)
        site = install_dependencies(python=python, arch=arch, cache=wheel_cache)
        for path in sorted(site.rglob("*")):
            rel = path.relative_to(site).as_posix()
            if path.is_file() and not path.is_symlink() and rel != _MARKER:
                if rel in files:
                    raise ValueError(f"{rel}: both a project source and a dependency file")
                files[rel] = path
        if bytecode:
            files |= _compiled(files, Path(compiled))
        return _from_archive_cache(dest, files, wheel_cache)


def _compiled(files: dict[str, Path], out: Path) -> dict[str, Path]:
    """The archive's modules compiled by this interpreter, as importlib names them
    (archive name -> compiled file). Unchecked-hash pycs: no timestamp in them, never
    checked against a source that cannot change in a deployed archive."""
    compiled = {}
    for rel, source in files.items():
        if rel.endswith(".py"):
            name = importlib.util.cache_from_source(rel)
            target = out / name
            py_compile.compile(
                str(source), cfile=str(target), dfile=rel, doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )  # fmt: skip
            compiled[name] = target
    return compiled


def _from_archive_cache(
    dest: Path, files: dict[str, Path], wheel_cache: str | os.PathLike[str] | None
) -> Path:
    # The same inputs give the same bytes, so an archive zipped before is copied, not
    # zipped again (deflating 100 MB is most of a build's time).
    archives = Path(wheel_cache or WHEELS_DIR) / "archives"
    cached = archives / f"{_content_key(files)}.zip"
    if not cached.is_file():
        write_deterministic_zip(cached, files)
        stale = sorted(archives.glob("*.zip"), key=lambda p: p.stat().st_mtime)
        for old in stale[:-_KEEP_ARCHIVES]:
            old.unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(cached, tmp_name)
        Path(tmp_name).replace(dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return dest


def _content_key(files: dict[str, Path]) -> str:
    """A digest of every archive name and file content, and of how they are zipped."""
    digest = hashlib.sha256(f"zip:{_COMPRESS_LEVEL}:{_FILE_MODE}:{_FIXED_DATE_TIME}".encode())
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0")
        digest.update(hashlib.sha256(files[rel].read_bytes()).digest())
    return digest.hexdigest()[:32]


def pinned_requirements(packages: tuple[str, ...] = LAMBDA_DEPENDENCIES) -> list[str]:
    """``name==version`` for each package, as installed where the build runs (what the tests
    and benchmarks ran against is what ships)."""
    from importlib import metadata

    pins = []
    for name in packages:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise RuntimeError(
                f"{name} is not installed here; the Lambda archive pins the version installed "
                "where it is built"
            ) from None
    return pins


def install_dependencies(
    *,
    python: str = "3.12",
    arch: str = "arm64",
    cache: str | os.PathLike[str] | None = None,
    requirements: list[str] | None = None,
) -> Path:
    """A directory holding the pinned dependencies for the Lambda runtime (``python``, ``arch``),
    stripped of what the runtime never imports; installed by pip once per key, then reused."""
    if arch not in PLATFORMS:
        raise ValueError(f"arch must be one of {sorted(PLATFORMS)}, got {arch!r}")
    major, _, minor = python.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise ValueError(f"python must look like 3.12, got {python!r}")
    requirements = requirements or pinned_requirements()
    platform = PLATFORMS[arch]
    recipe = {"requirements": requirements, "platform": platform, "python": python,
              "strip": sorted(_DROP_TOP | _DROP_DIRS | _DROP_DIST_INFO)}  # fmt: skip
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    entry = Path(cache or WHEELS_DIR) / f"py{python}-{arch}-{key}"
    if (entry / _MARKER).is_file():
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-compile", "--only-binary=:all:",
            "--platform", platform, "--python-version", python,
            "--implementation", "cp", "--abi", f"cp{major}{minor}",
            "--target", str(staging), *requirements,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-2000:]
            raise RuntimeError(f"pip could not install {' '.join(requirements)} for "
                               f"{platform} / Python {python}:\n{tail}")  # fmt: skip
        _strip(staging)
        (staging / _MARKER).write_text(json.dumps(recipe, sort_keys=True) + "\n")
        shutil.rmtree(entry, ignore_errors=True)  # an entry a crash left without its marker
        staging.replace(entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return entry


def _strip(site: Path) -> None:
    """Remove what the runtime never imports and what differs from one install to the next."""
    for path in sorted(site.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = path.relative_to(site).as_posix()
        if not path.exists():
            continue
        if path.is_dir() and (path.name in _DROP_DIRS or rel in _DROP_TOP):
            shutil.rmtree(path)
        elif path.is_symlink() or (path.is_file() and _dropped_file(path)):
            path.unlink()
    # console scripts: their first line names the interpreter of whoever built the archive
    shutil.rmtree(site / "bin", ignore_errors=True)


def _dropped_file(path: Path) -> bool:
    if path.suffix in _DROP_SUFFIXES:
        return True
    return path.parent.name.endswith(".dist-info") and path.name in _DROP_DIST_INFO


def bundle_report(path: str | os.PathLike[str], top: int = 8) -> dict[str, Any]:
    """Sizes of an archive: zipped (the file), unzipped (what Lambda's 250 MB limit counts),
    the top-level entries (packages) that take the most, largest first, and whether its
    modules ship compiled."""
    path = Path(path)
    by_package: dict[str, int] = {}
    unzipped = 0
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        for info in infos:
            unzipped += info.file_size
            head = info.filename.split("/", 1)[0]
            by_package[head] = by_package.get(head, 0) + info.file_size
    largest = sorted(by_package.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "path": str(path),
        "files": len(infos),
        "zipped_bytes": path.stat().st_size,
        "unzipped_bytes": unzipped,
        "unzipped_budget_bytes": UNZIPPED_BUDGET,
        "lambda_unzipped_limit_bytes": LAMBDA_UNZIPPED_LIMIT,
        "direct_upload_limit_bytes": LAMBDA_DIRECT_UPLOAD_LIMIT,
        "within_budget": unzipped <= UNZIPPED_BUDGET,
        "top": [{"name": name, "unzipped_bytes": size} for name, size in largest],
        "compiled": any(info.filename.endswith(".pyc") for info in infos),
    }


def sha256_base64(path: str | os.PathLike[str]) -> str:
    """The archive's sha256, base64-encoded: the form Lambda reports as ``CodeSha256``."""
    digest = hashlib.sha256(Path(path).read_bytes()).digest()
    return base64.b64encode(digest).decode("ascii")
