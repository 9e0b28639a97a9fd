"""The artifact store: S3ArtifactStore over the stack's data and models buckets.

Every upload carries a SHA-256 checksum; `put_artifact` verifies each stored copy against
the local file without downloading it (`head_object` size and `ChecksumSHA256`, composite
for a multipart object; an object with no stored checksum is read back instead) and writes
MANIFEST.json last, conditionally. `verify_tarball` checks model.tar.gz against the manifest.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from ml import artifact
from ml.clouds.aws.common import DATASETS, _code, _missing, parse_s3_uri
from ml.errors import ArtifactIntegrityError, ConflictError, NotFoundError

MIB = 1024 * 1024
MULTIPART_BYTES = 8 * MIB  # threshold and part size: the part size decides multipart checksums
S3_MAX_PARTS = 10_000


def _sha256_b64(digest_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(digest_hex)).decode()


def part_size(size: int, chunk: int) -> int:
    """The part size boto3's transfer manager uses for a file of `size` bytes."""
    while math.ceil(size / chunk) > S3_MAX_PARTS:
        chunk *= 2
    return chunk


def composite_sha256(path: Path, chunk: int) -> str:
    """S3's checksum of a multipart object: sha256 over the parts' sha256 digests."""
    digests = []
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digests.append(hashlib.sha256(block).digest())
    return base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()


def verify_tarball(tarball: Path, files: Mapping[str, str]) -> None:
    """model.tar.gz must hold exactly the manifest's content; names the member that differs."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            for name, expected in sorted(files.items()):
                member = members.get(name)
                handle = tar.extractfile(member) if member else None
                if handle is None:
                    raise ArtifactIntegrityError(
                        f"{artifact.TARBALL}: {name} is missing from the tarball"
                    )
                if hashlib.sha256(handle.read()).hexdigest() != expected:
                    raise ArtifactIntegrityError(
                        f"{artifact.TARBALL}: {name} differs from the manifest"
                    )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArtifactIntegrityError(f"{artifact.TARBALL}: unreadable ({exc})") from None


class S3ArtifactStore:
    """ArtifactStore over the stack's buckets; URIs are s3://bucket/key.

    Keys under `datasets/` live in the data bucket, every other key in the models bucket.
    Every object is written with SSE-KMS under the stack's key and a SHA-256 checksum.
    """

    def __init__(
        self,
        s3: Any,
        *,
        models_bucket: str,
        data_bucket: str,
        kms_key_arn: str,
        multipart_bytes: int = MULTIPART_BYTES,
    ) -> None:
        self.s3 = s3
        self.models_bucket = models_bucket
        self.data_bucket = data_bucket
        self.kms_key_arn = kms_key_arn
        self.transfer = TransferConfig(
            multipart_threshold=multipart_bytes, multipart_chunksize=multipart_bytes
        )
        self.write_args = {
            "ServerSideEncryption": "aws:kms",
            "SSEKMSKeyId": kms_key_arn,
            "ChecksumAlgorithm": "SHA256",
        }

    # addressing
    def _locate(self, uri_or_key: str) -> tuple[str, str]:
        if uri_or_key.startswith("s3://"):
            return parse_s3_uri(uri_or_key)
        key = uri_or_key.lstrip("/")
        return (self.data_bucket if key.startswith(DATASETS) else self.models_bucket), key

    def uri_for(self, key: str) -> str:
        bucket, key = self._locate(key)
        return f"s3://{bucket}/{key}"

    # objects
    def put_bytes(self, key: str, data: bytes) -> str:
        bucket, key = self._locate(key)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, **self.write_args)
        return f"s3://{bucket}/{key}"

    def get_bytes(self, uri_or_key: str) -> bytes:
        bucket, key = self._locate(uri_or_key)
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(f"s3://{bucket}/{key}: no such object") from None
            raise

    def exists(self, uri_or_key: str) -> bool:
        bucket, key = self._locate(uri_or_key)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    def list_keys(self, prefix: str) -> list[str]:
        prefix = prefix.lstrip("/")
        if prefix.startswith(DATASETS):
            buckets = [self.data_bucket]
        elif DATASETS.startswith(prefix):  # "" or "data": both buckets may hold matches
            buckets = [self.models_bucket, self.data_bucket]
        else:
            buckets = [self.models_bucket]
        keys: set[str] = set()
        for bucket in buckets:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    # the data bucket only serves datasets/, the models bucket everything else
                    if (bucket == self.data_bucket) == key.startswith(DATASETS):
                        keys.add(key)
        return sorted(keys)

    def upload_file(self, path: Path, uri_or_key: str) -> str:
        bucket, key = self._locate(uri_or_key)
        self.s3.upload_file(
            str(path), bucket, key, ExtraArgs=dict(self.write_args), Config=self.transfer
        )
        return f"s3://{bucket}/{key}"

    def download_file(self, uri_or_key: str, path: Path) -> Path:
        bucket, key = self._locate(uri_or_key)
        try:
            self.s3.download_file(bucket, key, str(path), Config=self.transfer)
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(f"s3://{bucket}/{key}: no such object") from None
            raise
        return path

    # artifacts
    def put_artifact(self, local_dir: Path, key: str) -> str:
        local_dir = Path(local_dir)
        files = artifact.verify(local_dir)  # nothing is sent for an artifact that fails here
        tarball = local_dir / artifact.TARBALL
        if tarball.is_file():
            verify_tarball(tarball, files)
        bucket, prefix = self._locate(key.strip("/"))
        uri = f"s3://{bucket}/{prefix}"
        stored = self._stored_manifest(bucket, prefix)
        if stored is not None:
            return self._settle(local_dir, uri, files, stored)
        content = [*sorted(files), *([artifact.TARBALL] if tarball.is_file() else [])]
        for name in content:
            self.upload_file(local_dir / name, f"{uri}/{name}")
        for name in content:
            self._verify_stored(local_dir / name, bucket, f"{prefix}/{name}")
        manifest = (local_dir / artifact.MANIFEST).read_bytes()
        try:
            # If-None-Match: the first complete writer wins; a later one sees 412
            self.s3.put_object(
                Bucket=bucket,
                Key=f"{prefix}/{artifact.MANIFEST}",
                Body=manifest,
                IfNoneMatch="*",
                **self.write_args,
            )
        except ClientError as exc:
            if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
            stored = self._stored_manifest(bucket, prefix)
            if stored is None:
                raise
            return self._settle(local_dir, uri, files, stored)
        self._verify_stored(local_dir / artifact.MANIFEST, bucket, f"{prefix}/{artifact.MANIFEST}")
        return uri

    def _settle(
        self, local_dir: Path, uri: str, files: Mapping[str, str], stored: Mapping[str, str]
    ) -> str:
        """The key already holds a complete artifact: the same one (verify it) or a conflict."""
        if dict(stored) != dict(files):
            changed = sorted(n for n in {*files, *stored} if files.get(n) != stored.get(n))
            raise ConflictError(
                f"{uri}: holds a different artifact already (differs in {', '.join(changed)})"
            )
        bucket, prefix = parse_s3_uri(uri)
        for name in sorted(files):  # the manifests were compared above, as parsed JSON
            self._verify_stored(local_dir / name, bucket, f"{prefix}/{name}")
        tarball = local_dir / artifact.TARBALL
        if tarball.is_file() and not self.exists(f"{uri}/{artifact.TARBALL}"):
            self.upload_file(tarball, f"{uri}/{artifact.TARBALL}")
            self._verify_stored(tarball, bucket, f"{prefix}/{artifact.TARBALL}")
        return uri

    def _stored_manifest(self, bucket: str, prefix: str) -> dict[str, str] | None:
        try:
            raw = self.s3.get_object(Bucket=bucket, Key=f"{prefix}/{artifact.MANIFEST}")
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        try:
            return dict(json.loads(raw["Body"].read())["files"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactIntegrityError(
                f"s3://{bucket}/{prefix}/{artifact.MANIFEST}: malformed manifest ({exc})"
            ) from None

    def _verify_stored(self, path: Path, bucket: str, key: str) -> None:
        """The object at `key` is byte-for-byte `path`, checked without downloading it when S3
        holds a SHA-256 checksum (it does for everything this store writes)."""
        digest = artifact.sha256_file(path)
        size = path.stat().st_size
        where = f"s3://{bucket}/{key}"
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _missing(exc):
                raise ArtifactIntegrityError(f"{path.name}: missing from {where}") from None
            raise
        if head.get("ContentLength") != size:
            raise ArtifactIntegrityError(
                f"{path.name}: stored size {head.get('ContentLength')} differs from the local "
                f"{size} bytes ({where})"
            )
        stored = head.get("ChecksumSHA256")
        if stored:
            # a multipart object's checksum reads "<base64>-<parts>" on S3
            stored = stored.split("-", 1)[0]
            expected = {_sha256_b64(digest)}
            if size >= self.transfer.multipart_threshold:
                chunk = part_size(size, self.transfer.multipart_chunksize)
                expected.add(composite_sha256(path, chunk))
            matches = stored in expected
        else:  # written by something that sent no checksum: read it back
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            hasher = hashlib.sha256()
            for block in iter(lambda: body.read(MIB), b""):
                hasher.update(block)
            matches = hasher.hexdigest() == digest
        if not matches:
            raise ArtifactIntegrityError(f"{path.name}: stored sha256 differs ({where})")

    def get_artifact(self, uri: str, dest: Path) -> Path:
        bucket, prefix = self._locate(uri.rstrip("/"))
        where = f"s3://{bucket}/{prefix}"
        files = self._stored_manifest(bucket, prefix)
        if files is None:
            raise NotFoundError(f"{where}: no artifact there (no {artifact.MANIFEST})")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for name in (artifact.MANIFEST, *sorted(files)):
            try:
                self.download_file(f"{where}/{name}", dest / name)
            except NotFoundError:
                raise ArtifactIntegrityError(
                    f"{name}: listed in the manifest but missing from {where}"
                ) from None
        # the tarball is optional: the same files, packed for SageMaker's conventions
        with contextlib.suppress(NotFoundError):
            self.download_file(f"{where}/{artifact.TARBALL}", dest / artifact.TARBALL)
        artifact.verify(dest)
        if (dest / artifact.TARBALL).is_file():
            verify_tarball(dest / artifact.TARBALL, files)
        return dest
