"""The artifact store: BlobArtifactStore over the stack's blob containers.

Addressing: a key's first segment picks its container (`contract.layout.azure_container_role`:
datasets in the data container, captures and reports in theirs, everything else in the models
container) and the key is the blob's name there. A URI is the blob's URL,
`{account_url}/{container}/{key}`; every method takes a key or a URI of this store.

Integrity: every write sends an MD5 that the service checks before it stores anything. Up to
`single_put_bytes` go in one Put Blob with Content-MD5, which the service keeps as the blob's
Content-MD5; more go as blocks of `block_bytes`, each with its own Content-MD5, staged
`max_concurrency` at a time under block ids of this upload alone (two writers of one blob
never commit each other's blocks), then committed with the whole file's MD5 as the blob's
Content-MD5. A stored copy is checked against the local file by size and that MD5 without a
download (read back when a blob has none). MD5 catches damage on the way; what an artifact IS
is the SHA-256 of each file in its manifest, checked on everything `get_artifact` downloads.

Artifacts: the verified transfer every store shares (ml/clouds/verified.py), MANIFEST.json
last and only if absent (If-None-Match: *). While it stores, `put_artifact` holds the lease of
a claim blob, `<key>/.claim` (ml/clouds/azure/locks.py): a second writer of the same key waits
for the first, then finds its manifest and settles (the same content is verified and its URI
returned, different content is a ConflictError), so one writer's files never land under
another's manifest. Names with a segment starting with "." are never listed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import mimetypes
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ContentSettings

from contract.layout import AZURE_CONTAINERS, azure_container_role
from ml import artifact
from ml.clouds import verified
from ml.clouds.azure.common import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    AzureOutputs,
    credential,
    translate_errors,
)
from ml.clouds.azure.locks import BlobLease
from ml.errors import (
    ArtifactIntegrityError,
    ConfigError,
    ConflictError,
    NotFoundError,
    TandemError,
)

MIB = 1024 * 1024
SINGLE_PUT_BYTES = 8 * MIB
BLOCK_BYTES = 8 * MIB
# azure-storage-blob sends a body in one Put Blob up to its client's max_single_put_size (64 MiB
# unless changed); a larger single put would be split by the SDK under its own block ids
SDK_SINGLE_PUT_LIMIT = 64 * MIB
MAX_BLOCK_BYTES = 4000 * MIB  # Put Block's limit
MAX_BLOCKS = 50_000  # blocks in one committed blob
CLAIM = ".claim"
CLAIM_LEASE_SECONDS = 60
CLAIM_POLL_SECONDS = 0.25
# the role of a key whose prefix names no container of its own
DEFAULT_ROLE = azure_container_role("")


def blob_service(cfg: AzureOutputs, **options: Any) -> BlobServiceClient:
    """The stack's Blob service: the storage account as the stack's identity
    (`DefaultAzureCredential`), or with `endpoint_url` Azurite with its public development
    key. `options` go to the client (retry policy, hooks, transport)."""
    if cfg.endpoint_url:
        key = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
        return BlobServiceClient(cfg.endpoint_url, credential=key, **options)
    return BlobServiceClient(cfg.storage_account_url, credential=credential(cfg), **options)


def block_size(size: int, block_bytes: int) -> int:
    """`block_bytes`, doubled until a blob of `size` bytes fits in MAX_BLOCKS blocks."""
    while math.ceil(size / block_bytes) > MAX_BLOCKS:
        block_bytes *= 2
    if block_bytes > MAX_BLOCK_BYTES:
        raise ConfigError(f"{size} bytes do not fit in {MAX_BLOCKS} blocks of Blob Storage")
    return block_bytes


def _md5(data: bytes) -> bytearray:
    return bytearray(hashlib.md5(data, usedforsecurity=False).digest())


class _SentDigests:
    """The MD5 of the local files this store sent lately, by the file's identity (device,
    inode, size, modification time), so checking a stored copy right after sending it does
    not read the file once more."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._digests: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _identity(path: Path) -> tuple[int, ...]:
        stat = path.stat()
        return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def remember(self, path: Path, digest: bytes) -> None:
        with self._lock:
            self._digests[self._identity(path)] = bytes(digest)
            while len(self._digests) > self.size:
                self._digests.popitem(last=False)

    def md5(self, path: Path) -> bytes:
        with self._lock:
            known = self._digests.get(self._identity(path))
        if known is not None:
            return known
        hasher = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(MIB), b""):
                hasher.update(block)
        return hasher.digest()


def _blob_missing(exc: ResourceNotFoundError) -> bool:
    """The blob is absent (a missing container is a configuration error, raised as such)."""
    return exc.error_code == "BlobNotFound"


def _hidden(key: str) -> bool:
    return any(part.startswith(".") for part in key.split("/"))


@translate_errors
class BlobArtifactStore:
    """ArtifactStore over the stack's containers (`containers`: role -> container name, the
    roles of contract.layout.AZURE_CONTAINERS); URIs are the blobs' https URLs."""

    def __init__(
        self,
        service: BlobServiceClient,
        containers: Mapping[str, str],
        *,
        max_concurrency: int = 4,
        single_put_bytes: int = SINGLE_PUT_BYTES,
        block_bytes: int = BLOCK_BYTES,
        claim_timeout: float = 600.0,  # how long a second writer of one artifact waits
    ) -> None:
        lacking = [role for role in AZURE_CONTAINERS if not containers.get(role)]
        if lacking:
            raise ConfigError(f"blob store: no container named for role(s) {', '.join(lacking)}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if not 0 <= single_put_bytes <= SDK_SINGLE_PUT_LIMIT:
            raise ValueError(
                f"single_put_bytes must be 0 to {SDK_SINGLE_PUT_LIMIT}, got {single_put_bytes}"
            )
        if not 0 < block_bytes <= MAX_BLOCK_BYTES:
            raise ValueError(f"block_bytes must be 1 to {MAX_BLOCK_BYTES}, got {block_bytes}")
        self.service = service
        self.containers = {role: containers[role] for role in AZURE_CONTAINERS}
        self.account_url = service.url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.single_put_bytes = single_put_bytes
        self.block_bytes = block_bytes
        self.claim_timeout = claim_timeout
        self._sent = _SentDigests()

    # addressing
    def _locate(self, uri_or_key: str) -> tuple[str, str]:
        """(container, blob name) of a key or of a URI of this store."""
        if "://" not in uri_or_key:
            key = uri_or_key.lstrip("/")
            if not key:
                raise TandemError(f"{uri_or_key!r}: names no blob (a key is needed)")
            return self.containers[azure_container_role(key)], key
        parts, mine = urlsplit(uri_or_key), urlsplit(self.account_url)
        base = mine.path.rstrip("/") + "/"
        same_account = (parts.scheme.lower(), parts.netloc.lower()) == (
            mine.scheme.lower(),
            mine.netloc.lower(),
        )
        if not same_account or not parts.path.startswith(base):
            raise NotFoundError(
                f"{uri_or_key}: not in this store (its blobs are under {self.account_url}/)"
            )
        container, _, key = parts.path[len(base) :].partition("/")
        key = unquote(key)
        if not key:
            raise NotFoundError(f"{uri_or_key}: names no blob (no key after the container)")
        expected = self.containers[azure_container_role(key)]
        if container != expected:
            raise NotFoundError(
                f"{uri_or_key}: not in this store ({key!r} belongs in container {expected!r} "
                f"of {self.account_url})"
            )
        return container, key

    def _url(self, container: str, key: str) -> str:
        # quoted as the SDK quotes a blob's URL, so a URI is the blob's `url`
        return f"{self.account_url}/{container}/{quote(key, safe='/~')}"

    def blob_client(self, uri_or_key: str) -> BlobClient:
        """The SDK's client for the blob under `uri_or_key` (for locks and leases)."""
        return self.service.get_blob_client(*self._locate(uri_or_key))

    def uri_for(self, key: str) -> str:
        return self._url(*self._locate(key))

    # objects
    def put_bytes(self, key: str, data: bytes) -> str:
        container, key = self._locate(key)
        self._send(container, key, io.BytesIO(data), len(data), overwrite=True)
        return self._url(container, key)

    def get_bytes(self, uri_or_key: str) -> bytes:
        data = self.read(uri_or_key)
        if data is None:
            raise NotFoundError(f"{self.uri_for(uri_or_key)}: no such blob")
        return data

    def exists(self, uri_or_key: str) -> bool:
        try:
            self.blob_client(uri_or_key).get_blob_properties()
        except ResourceNotFoundError as exc:
            if _blob_missing(exc):
                return False
            raise
        return True

    def list_keys(self, prefix: str) -> list[str]:
        prefix = prefix.lstrip("/")
        keys: set[str] = set()
        for role in self._roles_under(prefix):
            names = self.service.get_container_client(self.containers[role]).list_blob_names(
                name_starts_with=prefix or None
            )
            # a blob outside its role's container is not addressable by its key: not listed
            keys |= {n for n in names if azure_container_role(n) == role and not _hidden(n)}
        return sorted(keys)

    @staticmethod
    def _roles_under(prefix: str) -> list[str]:
        """The roles whose containers may hold keys starting with `prefix`."""
        for role, prefixes in AZURE_CONTAINERS.items():
            if any(prefix.startswith(p) for p in prefixes):
                return [role]
        return [DEFAULT_ROLE] + [
            role
            for role, prefixes in AZURE_CONTAINERS.items()
            if role != DEFAULT_ROLE and any(p.startswith(prefix) for p in prefixes)
        ]

    def upload_file(self, path: Path, uri_or_key: str) -> str:
        container, key = self._locate(uri_or_key)
        path = Path(path)
        with path.open("rb") as handle:
            digest = self._send(container, key, handle, path.stat().st_size, overwrite=True)
        self._sent.remember(path, digest)
        return self._url(container, key)

    def download_file(self, uri_or_key: str, path: Path) -> Path:
        blob = self.blob_client(uri_or_key)
        try:
            stream = blob.download_blob(max_concurrency=self.max_concurrency)
        except ResourceNotFoundError as exc:
            if _blob_missing(exc):
                raise NotFoundError(f"{self.uri_for(uri_or_key)}: no such blob") from None
            raise
        with Path(path).open("wb") as handle:
            stream.readinto(handle)
        return Path(path)

    # ObjectBackend, for the shared verified transfer
    def check_stored(self, path: Path, uri_or_key: str) -> None:
        """ArtifactIntegrityError unless the blob is byte for byte `path`: its size and the
        Content-MD5 the service checked on receipt, or its bytes when it has no MD5."""
        path = Path(path)
        blob = self.blob_client(uri_or_key)
        where = blob.url
        try:
            stored = blob.get_blob_properties()
        except ResourceNotFoundError as exc:
            if _blob_missing(exc):
                raise ArtifactIntegrityError(f"{path.name}: missing from {where}") from None
            raise
        size = path.stat().st_size
        if stored.size != size:
            raise ArtifactIntegrityError(
                f"{path.name}: stored size {stored.size} differs from the local {size} bytes "
                f"({where})"
            )
        digest = stored.content_settings.content_md5
        if digest:
            matches = bytes(digest) == self._sent.md5(path)
        else:  # written by something that sent no MD5: read it back
            hasher = hashlib.sha256()
            for chunk in blob.download_blob(max_concurrency=self.max_concurrency).chunks():
                hasher.update(chunk)
            matches = hasher.hexdigest() == artifact.sha256_file(path)
        if not matches:
            raise ArtifactIntegrityError(f"{path.name}: stored copy differs ({where})")

    def put_new(self, uri_or_key: str, data: bytes) -> bool:
        container, key = self._locate(uri_or_key)
        try:
            self._send(container, key, io.BytesIO(data), len(data), overwrite=False)
        except ResourceExistsError:
            return False
        return True

    def read(self, uri_or_key: str) -> bytes | None:
        try:
            return (
                self.blob_client(uri_or_key)
                .download_blob(max_concurrency=self.max_concurrency)
                .readall()
            )
        except ResourceNotFoundError as exc:
            if _blob_missing(exc):
                return None
            raise

    # artifacts
    def put_artifact(self, local_dir: Path, key: str) -> str:
        container, key = self._locate(key.rstrip("/"))
        key = key.strip("/")
        uri = self._url(container, key)
        claim = BlobLease(
            self.service.get_blob_client(container, f"{key}/{CLAIM}"),
            lease_seconds=CLAIM_LEASE_SECONDS,
        )
        claim.acquire(
            self.claim_timeout,
            CLAIM_POLL_SECONDS,
            busy=lambda: ConflictError(
                f"{uri}: another writer has been storing it for over {self.claim_timeout:g}s"
            ),
        )
        try:
            verified.put_artifact(self, Path(local_dir), key, uri)
        finally:
            claim.release()
        if claim.lost:  # stalled past the lease: settle against what is stored now
            verified.put_artifact(self, Path(local_dir), key, uri)
        return uri

    def get_artifact(self, uri: str, dest: Path) -> Path:
        container, key = self._locate(uri.rstrip("/"))
        return verified.get_artifact(self, key, Path(dest), self._url(container, key))

    # writing
    def _send(
        self, container: str, key: str, source: IO[bytes], size: int, *, overwrite: bool
    ) -> bytes:
        """Store `size` bytes from `source` under `key`, each request checked by the service
        against its MD5; not `overwrite`: only if absent (ResourceExistsError otherwise).
        Returns the MD5 of what was stored."""
        blob = self.service.get_blob_client(container, key)
        settings = ContentSettings(content_type=mimetypes.guess_type(key)[0])
        if size <= self.single_put_bytes:
            data = source.read()
            # validate_content: the SDK sends Content-MD5, the service checks and keeps it
            sent = blob.upload_blob(
                data, overwrite=overwrite, validate_content=True, content_settings=settings
            )
            # the service answers with the MD5 it checked (computed here when it does not)
            return bytes(sent.get("content_md5") or _md5(data))
        ids: list[str] = []
        hasher = hashlib.md5(usedforsecurity=False)
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            pending: set[Future[Any]] = set()
            try:
                for block_id, block in self._blocks(source, block_size(size, self.block_bytes)):
                    ids.append(block_id)
                    # validate_content: each block carries its Content-MD5, checked on receipt
                    stage = pool.submit(blob.stage_block, block_id, block, validate_content=True)
                    pending.add(stage)
                    hasher.update(block)  # while the block is on its way
                    if len(pending) >= 2 * self.max_concurrency:  # bounds the blocks in memory
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                for future in pending:
                    future.result()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        settings.content_md5 = bytearray(hasher.digest())
        condition = {} if overwrite else {"etag": "*", "match_condition": MatchConditions.IfMissing}
        blob.commit_block_list(
            [BlobBlock(block_id) for block_id in ids], content_settings=settings, **condition
        )
        return hasher.digest()

    @staticmethod
    def _blocks(source: IO[bytes], size: int) -> Iterator[tuple[str, bytes]]:
        """(block id, bytes) for each block of `source`; the ids are this upload's alone and
        as long as the SDK's (64 characters), as Blob Storage wants them within one blob."""
        nonce = uuid.uuid4().hex
        for index, block in enumerate(iter(lambda: source.read(size), b"")):
            yield base64.b64encode(f"{nonce}{index:016d}".encode()).decode(), block
