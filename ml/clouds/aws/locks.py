"""Locks: S3Locks, leases held as objects under `locks/` in the models bucket.

Taking a lock is a conditional write (`If-None-Match: *`): of two takers exactly one
succeeds. A lease names its holder and when it expires, so a lock left by a holder that died
is taken over after `lease_seconds` with a write conditional on the stale lease's ETag
(`If-Match`): of two takers of a stale lease, one wins. Releasing deletes the lease only if
it is still ours (`If-Match` on delete).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from contract import layout
from ml.clouds.aws.common import _code, _missing, translated
from ml.clouds.aws.store import S3ArtifactStore
from ml.clouds.locks import ReentrantLocks, safe_name
from ml.errors import TandemError

_LOST_RACE = ("PreconditionFailed", "412", "ConditionalRequestConflict")


class S3Locks(ReentrantLocks):
    def __init__(
        self,
        store: S3ArtifactStore,
        *,
        lease_seconds: float = 900.0,  # longer than the slowest deploy (Lambda updates: 300 s)
        poll_seconds: float = 0.5,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.store = store
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.sleep = sleep

    def _acquire(self, name: str, timeout: float) -> Callable[[], None]:
        bucket, key = self.store._locate(layout.lock_key(safe_name(name)))
        s3 = self.store.s3
        deadline = time.monotonic() + timeout
        try:
            while True:
                lease = {
                    "holder": uuid.uuid4().hex,
                    "expires_at": self.clock() + self.lease_seconds,
                }
                body = json.dumps(lease).encode()
                etag = self._put(s3, bucket, key, body, IfNoneMatch="*")
                if etag is None:
                    stale = self._stale_etag(s3, bucket, key)
                    if stale is not None:
                        etag = self._put(s3, bucket, key, body, IfMatch=stale)
                if etag is not None and self._confirmed(s3, bucket, key, lease["holder"]):
                    return lambda: self._release(s3, bucket, key, etag)
                if time.monotonic() > deadline:
                    raise TandemError(
                        f"{name}: still locked by another deployer after {timeout:g}s"
                    )
                self.sleep(self.poll_seconds)
        except (ClientError, BotoCoreError) as exc:
            raise translated(exc) from exc

    def _put(self, s3: Any, bucket: str, key: str, body: bytes, **condition: str) -> str | None:
        try:
            answer = s3.put_object(
                Bucket=bucket, Key=key, Body=body, **condition, **self.store.write_args
            )
        except ClientError as exc:
            if _code(exc) in _LOST_RACE or _missing(exc):
                return None
            raise
        return answer["ETag"]

    @staticmethod
    def _confirmed(s3: Any, bucket: str, key: str, holder: str) -> bool:
        """Read the lease back: S3 makes conditional writes atomic, an emulator may not, and
        a holder that reads its own lease back is the only holder either way."""
        try:
            held = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        except ValueError:
            return False
        return held.get("holder") == holder

    def _stale_etag(self, s3: Any, bucket: str, key: str) -> str | None:
        """The ETag of the current lease if it has expired (or is unreadable), else None."""
        try:
            held = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None  # released meanwhile: the next put takes it
            raise
        try:
            expires = float(json.loads(held["Body"].read())["expires_at"])
        except (ValueError, KeyError, TypeError):
            expires = 0.0
        return held["ETag"] if expires < self.clock() else None

    @staticmethod
    def _release(s3: Any, bucket: str, key: str, etag: str) -> None:
        try:
            s3.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        except ClientError as exc:
            if _code(exc) not in _LOST_RACE and not _missing(exc):
                raise translated(exc) from exc
            # taken over after our lease expired: nothing of ours to release
