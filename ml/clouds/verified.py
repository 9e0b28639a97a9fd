"""The verified artifact transfer every store shares.

`put_artifact`: verify the local manifest (and model.tar.gz against it) before sending
anything; upload each file; check each stored copy; then write MANIFEST.json LAST and only if
absent. A key that has a manifest therefore always held a complete, verified artifact, and
of two writers racing for one key the first complete one wins. A key that already holds an
artifact settles: the same content is verified and its URI returned (idempotent), different
content is a ConflictError naming the files that differ.

`get_artifact`: download the manifest and every file it lists (and model.tar.gz when stored),
then verify them all; a changed file is refused by name.

A store supplies the object operations (`ObjectBackend`); how it checks a stored copy is its
own business (S3 compares stored SHA-256 checksums without a download; a directory hashes the
file).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from ml import artifact
from ml.errors import ArtifactIntegrityError, ConflictError, NotFoundError


class ObjectBackend(Protocol):
    def upload_file(self, path: Path, key: str) -> None:
        """Store the file's bytes under `key` (last write wins)."""
        ...

    def download_file(self, key: str, path: Path) -> None:
        """Write the object under `key` to `path`; NotFoundError when absent."""
        ...

    def check_stored(self, path: Path, key: str) -> None:
        """ArtifactIntegrityError unless the object under `key` is byte for byte `path`."""
        ...

    def put_new(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` only if nothing is there, atomically; False if something was."""
        ...

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when absent."""
        ...


def stored_manifest(backend: ObjectBackend, key: str, where: str) -> dict[str, str] | None:
    raw = backend.read(f"{key}/{artifact.MANIFEST}")
    if raw is None:
        return None
    try:
        files = json.loads(raw)["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
        return {str(k): str(v) for k, v in files.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactIntegrityError(
            f"{where}/{artifact.MANIFEST}: malformed manifest ({exc})"
        ) from None


def put_artifact(backend: ObjectBackend, local_dir: Path, key: str, where: str) -> None:
    """Store the artifact in `local_dir` under `key` (see the module docstring)."""
    local_dir = Path(local_dir)
    files = artifact.verify(local_dir)  # nothing is sent for an artifact that fails here
    tarball = local_dir / artifact.TARBALL
    has_tarball = tarball.is_file()
    if has_tarball:
        artifact.verify_tarball(tarball, files)
    stored = stored_manifest(backend, key, where)
    if stored is not None:
        return _settle(backend, local_dir, key, where, files, stored)
    content = [*sorted(files), *([artifact.TARBALL] if has_tarball else [])]
    for name in content:
        backend.upload_file(local_dir / name, f"{key}/{name}")
    for name in content:
        backend.check_stored(local_dir / name, f"{key}/{name}")
    manifest = local_dir / artifact.MANIFEST
    if not backend.put_new(f"{key}/{artifact.MANIFEST}", manifest.read_bytes()):
        stored = stored_manifest(backend, key, where)  # a concurrent writer finished first
        if stored is None:
            raise ArtifactIntegrityError(f"{where}: the manifest vanished while storing")
        return _settle(backend, local_dir, key, where, files, stored)
    backend.check_stored(manifest, f"{key}/{artifact.MANIFEST}")


def _settle(
    backend: ObjectBackend,
    local_dir: Path,
    key: str,
    where: str,
    files: Mapping[str, str],
    stored: Mapping[str, str],
) -> None:
    """The key holds a complete artifact already: the same one (verify it) or a conflict."""
    if dict(stored) != dict(files):
        changed = sorted(n for n in {*files, *stored} if files.get(n) != stored.get(n))
        raise ConflictError(
            f"{where}: holds a different artifact already (differs in {', '.join(changed)})"
        )
    for name in sorted(files):
        backend.check_stored(local_dir / name, f"{key}/{name}")
    tarball = local_dir / artifact.TARBALL
    if tarball.is_file():
        try:
            backend.check_stored(tarball, f"{key}/{artifact.TARBALL}")
        except ArtifactIntegrityError:
            # missing (an older writer sent none) or damaged: the verified local copy replaces it
            backend.upload_file(tarball, f"{key}/{artifact.TARBALL}")
            backend.check_stored(tarball, f"{key}/{artifact.TARBALL}")


def get_artifact(backend: ObjectBackend, key: str, dest: Path, where: str) -> Path:
    """Download the artifact under `key` into `dest` and verify every file (see above)."""
    files = stored_manifest(backend, key, where)
    if files is None:
        raise NotFoundError(f"{where}: no artifact there (no {artifact.MANIFEST})")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in (artifact.MANIFEST, *sorted(files)):
        if "/" in name or name.startswith("."):
            raise ArtifactIntegrityError(f"{where}/{artifact.MANIFEST}: lists a bad name {name!r}")
        try:
            backend.download_file(f"{key}/{name}", dest / name)
        except NotFoundError:
            raise ArtifactIntegrityError(
                f"{name}: listed in the manifest but missing from {where}"
            ) from None
    # the tarball is optional: the same files, packed for SageMaker's conventions
    with contextlib.suppress(NotFoundError):
        backend.download_file(f"{key}/{artifact.TARBALL}", dest / artifact.TARBALL)
    artifact.verify(dest)
    if (dest / artifact.TARBALL).is_file():
        artifact.verify_tarball(dest / artifact.TARBALL, files)
    return dest
