"""Build the deployment archives for the endpoints.

The Lambda archive keeps the package layout (``deploy/aws_lambda/handler.py``,
``deploy/inference.py``), so the handler imports the same modules in Lambda as it does
locally, and ``LAMBDA_HANDLER`` is the one place that names the entry point.

Archives are deterministic: entries are sorted and carry a fixed timestamp and mode, so
building the same sources twice gives the same bytes and the same sha256, and
``pulumi up`` only uploads new code when the code really changed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent
REPO_ROOT = DEPLOY_DIR.parent

LAMBDA_ZIP_NAME = "tandem-lambda.zip"
#: The Lambda ``handler`` setting: module path inside the archive, then the function.
LAMBDA_HANDLER = "deploy.aws_lambda.handler.handler"

# Paths inside the archive (relative to the repository root). `deploy/inference.py` is
# optional until the serving work adds it; the package markers make `deploy.*` importable,
# and the shared vocabulary's serving words (`contract.serving`) ship with the handler.
_LAMBDA_REQUIRED = (
    "contract/__init__.py",
    "contract/serving.py",
    "deploy/__init__.py",
    "deploy/aws_lambda/__init__.py",
    "deploy/aws_lambda/handler.py",
)
_LAMBDA_OPTIONAL = ("deploy/inference.py",)

# The earliest timestamp a zip entry can hold (MS-DOS epoch); any fixed value would do.
_FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# Regular file, rw-r--r--: Lambda needs the files world-readable
# (https://docs.aws.amazon.com/lambda/latest/dg/troubleshooting-deployment.html).
_FILE_MODE = 0o100644
_COMPRESS_LEVEL = 9


def lambda_sources(root: Path = REPO_ROOT) -> list[str]:
    """The archive paths of the Lambda code, sorted; raises if a required file is missing."""
    missing = [rel for rel in _LAMBDA_REQUIRED if not (root / rel).is_file()]
    if missing:
        raise FileNotFoundError(f"Lambda sources missing under {root}: {', '.join(missing)}")
    present = [rel for rel in _LAMBDA_OPTIONAL if (root / rel).is_file()]
    return sorted([*_LAMBDA_REQUIRED, *present])


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


def build_lambda_zip(dest_dir: str | os.PathLike[str], root: Path = REPO_ROOT) -> Path:
    """Build the inference Lambda's code archive in ``dest_dir`` and return its path."""
    files = {rel: root / rel for rel in lambda_sources(root)}
    return write_deterministic_zip(Path(dest_dir) / LAMBDA_ZIP_NAME, files)


def sha256_base64(path: str | os.PathLike[str]) -> str:
    """The archive's sha256, base64-encoded: the form Lambda reports as ``CodeSha256``."""
    digest = hashlib.sha256(Path(path).read_bytes()).digest()
    return base64.b64encode(digest).decode("ascii")
