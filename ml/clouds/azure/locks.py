"""Locks as blob leases: BlobLocks (named locks under `locks/`) and the BlobLease they hold.

Holding a lock is holding the lease of one blob, `locks/<name>.json` in the models container:
Blob Storage grants a blob's lease to one client at a time (Lease Blob `acquire` answers 409
LeaseAlreadyPresent while someone else holds it), so of any number of takers exactly one
holds it. Azure leases last 15 to 60 seconds or forever; an infinite lease would outlive a
holder that died, so a holder takes a finite one and renews it in the background for as long
as it holds the lock. A holder that dies stops renewing: its lease expires within
`lease_seconds` and the next taker gets it. Releasing deletes the blob under the lease, so a
released lock leaves nothing behind; a dead holder leaves its blob, which the next taker
leases as it is.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobClient, BlobLeaseClient

from contract import layout
from ml.clouds.azure.common import translated
from ml.clouds.locks import ReentrantLocks, safe_name
from ml.errors import TandemError

if TYPE_CHECKING:
    from ml.clouds.azure.store import BlobArtifactStore

# Lease Blob: "a duration between 15 and 60 seconds, or -1 for an infinite lease"
LEASE_SECONDS_RANGE = (15, 60)
_BLOB_NOT_FOUND = "BlobNotFound"


def checked_lease_seconds(seconds: int) -> int:
    low, high = LEASE_SECONDS_RANGE
    if not (isinstance(seconds, int) and low <= seconds <= high):
        raise ValueError(
            f"lease_seconds must be {low} to {high} (Azure's finite leases), got {seconds!r}"
        )
    return seconds


def _status(exc: AzureError) -> int | None:
    return exc.status_code if isinstance(exc, HttpResponseError) else None


class BlobLease:
    """The lease of one blob, taken when it is free and kept alive until `release`.

    The blob is created (holding `body`) when absent. `lost` says why the lease lapsed while
    held (a renewal refused: the holder stalled for longer than the lease), else None.
    """

    def __init__(
        self,
        blob: BlobClient,
        *,
        lease_seconds: int = 60,
        renew_seconds: float | None = None,
        body: bytes = b"",
    ) -> None:
        self.blob = blob
        self.lease_seconds = checked_lease_seconds(lease_seconds)
        # three renewals per lease: one refused or slow renewal still leaves time for the next
        self.renew_seconds = renew_seconds or self.lease_seconds / 3
        self.body = body
        self.lease: BlobLeaseClient | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self, timeout: float, poll_seconds: float, busy: Callable[[], TandemError]) -> None:
        """Take the lease, waiting while someone else holds it; `busy()` is raised after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        try:
            lease = self._take(create_first=True)
            while lease is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise busy()
                time.sleep(min(poll_seconds, left))
                lease = self._take(create_first=False)
        except AzureError as exc:
            raise translated(exc) from exc
        self.lease = lease
        self._renewer = threading.Thread(
            target=self._renew, args=(lease,), name=f"lease of {self.blob.blob_name}", daemon=True
        )
        self._renewer.start()

    def _take(self, *, create_first: bool) -> BlobLeaseClient | None:
        """The lease, or None while another client holds it."""
        if create_first:
            self._create()
        for _ in range(2):  # a holder may delete the blob between our create and our acquire
            lease = BlobLeaseClient(self.blob)
            try:
                lease.acquire(lease_duration=self.lease_seconds)
                return lease
            except ResourceExistsError:  # 409: leased by someone else
                return None
            except HttpResponseError as exc:
                if exc.error_code != _BLOB_NOT_FOUND:
                    raise
                self._create()
        return None

    def _create(self) -> None:
        # when it exists already, taking its lease decides who holds it
        with contextlib.suppress(ResourceExistsError):
            self.blob.upload_blob(self.body, overwrite=False)

    def _renew(self, lease: BlobLeaseClient) -> None:
        while not self._stop.wait(self.renew_seconds):
            try:
                lease.renew()
            except AzureError as exc:
                if _status(exc) in (404, 409, 412):  # expired and taken, or the blob is gone
                    self.lost = translated(exc).args[0]
                    return
                # anything else may pass: the next renewal is due well before the lease ends

    def release(self) -> None:
        """Stop renewing and delete the blob under the lease (a lost lease deletes nothing)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.lease is None:
            return
        try:
            self.blob.delete_blob(lease=self.lease)
        except AzureError as exc:
            if _status(exc) not in (404, 409, 412):
                raise translated(exc) from exc
            self.lost = self.lost or translated(exc).args[0]
        finally:
            self.lease = None


class BlobLocks(ReentrantLocks):
    """Locks (ml/clouds/base.py) as leases on blobs under `locks/` in the store's models
    container. `renew_seconds` defaults to a third of `lease_seconds`."""

    def __init__(
        self,
        store: BlobArtifactStore,
        *,
        lease_seconds: int = 60,
        poll_seconds: float = 0.25,
        renew_seconds: float | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.lease_seconds = checked_lease_seconds(lease_seconds)
        self.poll_seconds = poll_seconds
        self.renew_seconds = renew_seconds

    def _acquire(self, name: str, timeout: float) -> Callable[[], None]:
        key = layout.lock_key(safe_name(name))
        lease = BlobLease(
            self.store.blob_client(key),
            lease_seconds=self.lease_seconds,
            renew_seconds=self.renew_seconds,
            body=f'{{"lock": "{safe_name(name)}"}}'.encode(),
        )
        lease.acquire(
            timeout,
            self.poll_seconds,
            busy=lambda: TandemError(f"{name}: still locked by another holder after {timeout:g}s"),
        )

        def release() -> None:
            lease.release()
            if lease.lost:
                warnings.warn(
                    f"{name}: the lock's lease lapsed while held ({lease.lost}); another "
                    "holder may have held it at the same time",
                    RuntimeWarning,
                    stacklevel=2,
                )

        return release
