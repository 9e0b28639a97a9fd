"""BlobLocks against Azurite: one holder at a time across threads (each with its own client, as
separate machines would be), leases renewed while held, a dead holder's lease taken over once
it expires, a timeout that names the lock, nothing left behind after a release."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

from contract import layout
from ml.clouds.azure.locks import BlobLocks
from ml.clouds.azure.store import BlobArtifactStore
from ml.clouds.locks import model_lock, safe_name
from ml.errors import TandemError
from tests.integration.azure.conftest import Recorder

LOCK = model_lock("credit")
COUNTER = "runs/credit/counter.txt"
SHORTEST_LEASE = 15  # Azure's shortest finite lease


def lock_blob(blobs: BlobServiceClient, outputs: dict[str, Any], name: str = LOCK) -> Any:
    key = layout.lock_key(safe_name(name))
    return blobs.get_blob_client(outputs["containers"]["models"], key)


def test_one_holder_at_a_time_across_threads(make_store: Callable[..., BlobArtifactStore]) -> None:
    store = make_store()
    store.put_bytes(COUNTER, b"0")
    callers, times = 6, 5
    inside, most_inside = [0], [0]
    seen = threading.Lock()
    start = threading.Barrier(callers)
    failures: list[BaseException] = []

    def caller() -> None:
        own = make_store()  # its own client, as another machine would have
        locks = BlobLocks(own, poll_seconds=0.05)
        start.wait(30)
        try:
            for _ in range(times):
                with locks.hold(LOCK, timeout=60):
                    with seen:
                        inside[0] += 1
                        most_inside[0] = max(most_inside[0], inside[0])
                    count = int(own.get_bytes(COUNTER))
                    own.put_bytes(COUNTER, str(count + 1).encode())
                    with seen:
                        inside[0] -= 1
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    assert most_inside[0] == 1
    assert store.get_bytes(COUNTER) == str(callers * times).encode()
    assert store.list_keys(layout.LOCKS) == []  # every release deleted its lease blob


def test_a_held_lock_times_out_naming_it_and_is_free_after_an_exception(
    make_store: Callable[..., BlobArtifactStore],
) -> None:
    holder, waiter = BlobLocks(make_store()), BlobLocks(make_store(), poll_seconds=0.05)
    busy = pytest.raises(TandemError, match=re.escape(f"{LOCK}: still locked"))
    with holder.hold(LOCK), busy, waiter.hold(LOCK, timeout=0.3):
        pass
    with pytest.raises(RuntimeError, match="inside"), holder.hold(LOCK):
        raise RuntimeError("inside")
    with waiter.hold(LOCK, timeout=0):  # free at once: released on the way out
        pass


def test_a_holder_renews_its_lease_while_it_holds_the_lock(
    make_store: Callable[..., BlobArtifactStore], recorder: Recorder
) -> None:
    renewed = threading.Event()

    def watch(request: Any) -> None:
        recorder(request)
        renewals = [s for s in recorder.sent if s.headers.get("x-ms-lease-action") == "renew"]
        if len(renewals) >= 2:
            renewed.set()

    locks = BlobLocks(make_store(hook=watch), lease_seconds=SHORTEST_LEASE, renew_seconds=0.05)
    other = BlobLocks(make_store())
    with locks.hold(LOCK):
        assert renewed.wait(30), "the lease was never renewed"
        with pytest.raises(TandemError, match="still locked"), other.hold(LOCK, timeout=0):
            pass
    ends = [s for s in recorder.sent if s.blob.endswith(".json") and s.method == "DELETE"]
    assert ends and ends[-1].headers.get("x-ms-lease-id")  # released by deleting under the lease


@pytest.mark.slow  # one shortest lease, left to expire
def test_a_dead_holders_lease_expires_and_is_taken_over(
    make_store: Callable[..., BlobArtifactStore],
    blobs: BlobServiceClient,
    azure_outputs: dict[str, Any],
) -> None:
    """What a holder that died leaves: the lock's blob under a lease nobody renews."""
    blob = lock_blob(blobs, azure_outputs)
    blob.upload_blob(b"{}")
    dead = blob.acquire_lease(SHORTEST_LEASE)
    locks = BlobLocks(make_store(), poll_seconds=0.5)
    with locks.hold(LOCK, timeout=SHORTEST_LEASE * 4):
        assert blob.get_blob_properties().lease.state == "leased"
        with pytest.raises(HttpResponseError):  # the dead holder's lease is no longer the lease
            dead.renew()


def test_a_lease_lost_while_held_is_reported_on_release(
    make_store: Callable[..., BlobArtifactStore],
    blobs: BlobServiceClient,
    azure_outputs: dict[str, Any],
) -> None:
    locks = BlobLocks(make_store())
    lapsed = pytest.warns(RuntimeWarning, match=re.escape(f"{LOCK}: the lock's lease lapsed"))
    with lapsed, locks.hold(LOCK):
        BlobLeaseClient(lock_blob(blobs, azure_outputs)).break_lease(0)  # by someone else


def test_lease_seconds_outside_azures_range_are_refused(store: BlobArtifactStore) -> None:
    for seconds in (14, 61, -1):
        with pytest.raises(ValueError, match="lease_seconds must be 15 to 60"):
            BlobLocks(store, lease_seconds=seconds)
