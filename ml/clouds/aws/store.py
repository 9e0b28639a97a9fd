"""The artifact store: S3ArtifactStore over the stack's data and models buckets.

The verified transfer (upload, check, manifest last, settle) is the one every store shares
(`ml/clouds/verified.py`); what is S3's own is here: every upload carries a SHA-256 checksum,
a stored copy is checked against the local file without downloading it (`head_object` size
and `ChecksumSHA256`, composite for a multipart object; an object with no stored checksum is
read back instead), and "only if absent" is a conditional write (`If-None-Match: *`).
"""

from __future__ import annotations

import base64
import hashlib
import math
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from contract.layout import DATASETS, LAMBDA_CODE
from ml import artifact
from ml.clouds import verified
from ml.clouds.aws.common import _code, _missing, parse_s3_uri, translate_errors
from ml.errors import ArtifactIntegrityError, NotFoundError

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


@translate_errors
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
                    if key.startswith(LAMBDA_CODE):
                        continue  # the serving functions' code: the platform's, not the store's
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

    # ObjectBackend, for the shared verified transfer
    def check_stored(self, path: Path, uri_or_key: str) -> None:
        bucket, key = self._locate(uri_or_key)
        self._verify_stored(path, bucket, key)

    def put_new(self, uri_or_key: str, data: bytes) -> bool:
        bucket, key = self._locate(uri_or_key)
        try:
            # If-None-Match: the first complete writer wins; a later one sees 412
            self.s3.put_object(
                Bucket=bucket, Key=key, Body=data, IfNoneMatch="*", **self.write_args
            )
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def read(self, uri_or_key: str) -> bytes | None:
        try:
            return self.get_bytes(uri_or_key)
        except NotFoundError:
            return None

    # artifacts
    def put_artifact(self, local_dir: Path, key: str) -> str:
        uri = self.uri_for(key.strip("/"))
        verified.put_artifact(self, Path(local_dir), uri, uri)
        return uri

    def get_artifact(self, uri: str, dest: Path) -> Path:
        uri = self.uri_for(uri.rstrip("/"))  # a key or an s3:// URI
        return verified.get_artifact(self, uri, Path(dest), uri)

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
