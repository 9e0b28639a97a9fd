"""BlobArtifactStore against Azurite: keys in their roles' containers, URIs that are the blobs'
URLs, every write checked by the service against its MD5, the manifest last and only if absent,
tampering and racing writers named. (What every store guarantees is tests/contract/test_store.py.)
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from contract.layout import AZURE_CONTAINERS, azure_container_role
from ml import artifact
from ml.clouds.azure.common import AzureOutputs
from ml.clouds.azure.store import CLAIM, BlobArtifactStore
from ml.errors import ArtifactIntegrityError, ConfigError, ConflictError, NotFoundError, TandemError
from tests.azure_stack import outputs, service
from tests.integration.azure.conftest import Recorder

KEY = "artifacts/credit/run-1"
SMALL = 64 * 1024  # single put and block size for tests that need files sent in blocks
FILES = (*artifact.CONTENT, artifact.TARBALL)


def md5(path: Path) -> bytes:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).digest()


def flipped(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def test_each_key_lives_in_its_roles_container_under_the_blobs_own_url(
    store: BlobArtifactStore, blobs: BlobServiceClient, azure_outputs: dict[str, Any]
) -> None:
    containers = azure_outputs["containers"]
    keys = [f"{prefix}credit/x.json" for ps in AZURE_CONTAINERS.values() for prefix in ps]
    for key in [*keys, "elsewhere/credit/x.json", "reports/credit/run 1.html"]:
        uri = store.put_bytes(key, key.encode())
        blob = blobs.get_blob_client(containers[azure_container_role(key)], key)
        assert uri == store.uri_for(key) == blob.url
        assert blob.download_blob().readall() == key.encode(), key
        assert store.get_bytes(uri) == store.get_bytes(key) == key.encode()
        assert store.exists(uri) and store.exists(key)
    assert store.uri_for("datasets/credit/a.csv") == (
        f"{azure_outputs['endpoint_url']}/{containers['data']}/datasets/credit/a.csv"
    )


def test_a_uri_of_another_account_or_container_is_refused_by_name(
    store: BlobArtifactStore, azure_outputs: dict[str, Any], azurite: str
) -> None:
    key = "runs/credit/a.json"
    uri = store.put_bytes(key, b"{}")
    ours = azure_outputs["containers"]
    theirs = outputs(azurite, stack="another")["containers"]
    foreign = [
        f"https://someoneelse.blob.core.windows.net/{ours['models']}/{key}",
        uri.replace(ours["models"], theirs["models"]),  # another stack's container
        uri.replace(ours["models"], ours["data"]),  # ours, but runs/ live in the models one
    ]
    for other in foreign:
        for call in (store.get_bytes, store.exists):
            with pytest.raises(NotFoundError, match=re.escape(other)):
                call(other)


def test_list_keys_by_prefix_across_the_containers(
    store: BlobArtifactStore, blobs: BlobServiceClient, azure_outputs: dict[str, Any]
) -> None:
    keys = sorted(
        [f"{prefix}credit/x.json" for ps in AZURE_CONTAINERS.values() for prefix in ps]
        + ["elsewhere/credit/x.json"]
    )
    for key in keys:
        store.put_bytes(key, b"{}")
    # what the store never addresses: runs/ in the data container, a writer's claim
    data = azure_outputs["containers"]["data"]
    blobs.get_blob_client(data, "runs/credit/stray.json").upload_blob(b"{}")
    store.put_bytes(f"{KEY}/{CLAIM}", b"")

    assert store.list_keys("") == keys
    assert store.list_keys("r") == [k for k in keys if k.startswith("r")]
    assert store.list_keys("datasets/") == ["datasets/credit/x.json"]
    assert store.list_keys("captures/credit/") == ["captures/credit/x.json"]
    assert store.list_keys("runs/credit/x.json") == ["runs/credit/x.json"]
    assert store.list_keys("nothing/") == []


def test_a_missing_container_is_a_config_error_that_names_it(
    azurite: str, sealed: Callable[..., Path]
) -> None:
    made = outputs(azurite, stack="nocontainers")  # the containers were never created
    store = BlobArtifactStore(service(made), AzureOutputs.parse(made).containers)
    missing = re.escape(repr(made["containers"]["models"]))
    calls = [
        lambda: store.put_bytes("runs/credit/a.json", b"{}"),
        lambda: store.get_bytes("runs/credit/a.json"),
        lambda: store.exists("runs/credit/a.json"),
        lambda: store.list_keys("runs/"),
        lambda: store.put_artifact(sealed(), KEY),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match=missing):
            call()


def test_an_unreachable_service_raises_tandems_error(azure_outputs: dict[str, Any]) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    made = {**azure_outputs, "endpoint_url": f"http://127.0.0.1:{port}/devstoreaccount1"}
    store = BlobArtifactStore(service(made, retry_total=0), AzureOutputs.parse(made).containers)
    with pytest.raises(TandemError, match="cannot reach Azure") as raised:
        store.put_bytes("runs/credit/a.json", b"{}")
    assert type(raised.value).__module__ == "ml.errors"


def test_artifact_round_trip_in_blocks_each_checked_by_the_service(
    make_store: Callable[..., BlobArtifactStore],
    recorder: Recorder,
    blobs: BlobServiceClient,
    azure_outputs: dict[str, Any],
    sealed: Callable[..., Path],
    tmp_path: Path,
) -> None:
    store = make_store(hook=recorder, single_put_bytes=SMALL, block_bytes=SMALL)
    local = sealed(size=5 * SMALL + 1)
    uri = store.put_artifact(local, KEY)

    sent = [
        s
        for s in recorder.sent
        if s.method == "PUT" and s.comp in (None, "block") and not s.blob.endswith(CLAIM)
    ]
    assert sent and all(s.headers.get("Content-MD5") for s in sent)  # the service checks each
    models = azure_outputs["containers"]["models"]
    onnx = blobs.get_blob_client(models, f"{KEY}/{artifact.ONNX}")
    committed, _ = onnx.get_block_list("committed")
    assert [b.size for b in committed] == [SMALL] * 5 + [1]
    for name in (*FILES, artifact.MANIFEST):
        stored = blobs.get_blob_client(models, f"{KEY}/{name}").get_blob_properties()
        assert bytes(stored.content_settings.content_md5) == md5(local / name), name

    fetched = store.get_artifact(uri, tmp_path / "fetched")
    for name in (*FILES, artifact.MANIFEST):
        assert (fetched / name).read_bytes() == (local / name).read_bytes(), name


def test_the_manifest_is_written_last_and_only_if_absent(
    make_store: Callable[..., BlobArtifactStore], recorder: Recorder, sealed: Callable[..., Path]
) -> None:
    make_store(hook=recorder).put_artifact(sealed(), KEY)
    writes = [w for w in recorder.writes(f"{KEY}/") if not w.blob.endswith(CLAIM)]
    names = [w.blob.rsplit("/", 1)[-1] for w in writes]
    assert names[-1] == artifact.MANIFEST
    assert sorted(names[:-1]) == sorted(FILES)
    assert writes[-1].headers["If-None-Match"] == "*"  # the first complete writer wins


class Interrupted(Exception):
    """The process stopped mid-upload (Ctrl-C, a lost connection, a killed job)."""


def test_an_interrupted_upload_leaves_no_manifest_and_a_retry_completes(
    make_store: Callable[..., BlobArtifactStore],
    store: BlobArtifactStore,
    sealed: Callable[..., Path],
    tmp_path: Path,
) -> None:
    def cut(request: Any) -> None:
        http = request.http_request
        if http.method == "PUT" and http.url.split("?")[0].endswith(artifact.CARD):
            raise Interrupted

    local = sealed()
    with pytest.raises(Interrupted):
        make_store(hook=cut).put_artifact(local, KEY)
    assert store.exists(f"{KEY}/{artifact.BASELINE}")  # it got that far
    assert not store.exists(f"{KEY}/{artifact.MANIFEST}")
    assert not store.exists(f"{KEY}/{CLAIM}")  # the claim was let go
    with pytest.raises(NotFoundError):
        store.get_artifact(store.uri_for(KEY), tmp_path / "fetched")

    uri = store.put_artifact(local, KEY)
    fetched = store.get_artifact(uri, tmp_path / "fetched")
    assert artifact.verify(fetched) == artifact.verify(local)


@pytest.mark.parametrize("damaged", [artifact.ONNX, artifact.CARD], ids=["block", "single-put"])
def test_bytes_damaged_on_the_way_are_refused_by_the_service(
    make_store: Callable[..., BlobArtifactStore],
    store: BlobArtifactStore,
    sealed: Callable[..., Path],
    damaged: str,
) -> None:
    """model.onnx goes in blocks, model_card.json in one put: either way the request's
    Content-MD5 no longer matches its body and the service stores nothing."""
    hits: list[str] = []

    def damage(request: Any) -> None:
        http = request.http_request
        blob_url, _, query = http.url.partition("?")
        content = http.method == "PUT" and "comp=blocklist" not in query
        if content and blob_url.endswith(damaged) and isinstance(http.data, bytes) and http.data:
            http.data = flipped(http.data)
            hits.append(blob_url)

    local = sealed(size=3 * SMALL)
    sender = make_store(hook=damage, single_put_bytes=SMALL, block_bytes=SMALL)
    with pytest.raises(TandemError, match=re.escape(damaged)):
        sender.put_artifact(local, KEY)
    assert hits, "nothing was damaged"
    assert not store.exists(f"{KEY}/{damaged}")
    assert not store.exists(f"{KEY}/{artifact.MANIFEST}")


def test_a_blob_changed_behind_the_store_is_refused_even_under_its_old_md5(
    store: BlobArtifactStore,
    blobs: BlobServiceClient,
    azure_outputs: dict[str, Any],
    sealed: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """A block blob's Content-MD5 is whatever its writer set: get_artifact hashes what it
    downloads instead of trusting it."""
    local = sealed()
    uri = store.put_artifact(local, KEY)
    blob = blobs.get_blob_client(azure_outputs["containers"]["models"], f"{KEY}/{artifact.ONNX}")
    genuine = blob.get_blob_properties().content_settings.content_md5
    block = base64.b64encode(b"tampered").decode()
    blob.stage_block(block, flipped((local / artifact.ONNX).read_bytes()))
    blob.commit_block_list([block], content_settings=ContentSettings(content_md5=genuine))
    assert blob.get_blob_properties().content_settings.content_md5 == genuine
    with pytest.raises(ArtifactIntegrityError, match=re.escape(artifact.ONNX)):
        store.get_artifact(uri, tmp_path / "fetched")


def test_storing_the_same_artifact_again_sends_no_content(
    make_store: Callable[..., BlobArtifactStore], recorder: Recorder, sealed: Callable[..., Path]
) -> None:
    local = sealed()
    first = make_store().put_artifact(local, KEY)
    assert make_store(hook=recorder).put_artifact(local, f"{KEY}/") == first
    assert [w for w in recorder.writes(f"{KEY}/") if not w.blob.endswith(CLAIM)] == []


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run `calls` in threads released together; each one's result or exception."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        start.wait(30)
        try:
            results[index] = calls[index]()
        except Exception as exc:  # compared by the test
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_racing_writers_of_different_artifacts_under_one_key_one_wins(
    make_store: Callable[..., BlobArtifactStore],
    sealed: Callable[..., Path],
    tmp_path: Path,
) -> None:
    writers = [sealed(f"writer-{i}", size=3 * SMALL) for i in range(4)]
    stores = [make_store(single_put_bytes=SMALL, block_bytes=SMALL) for _ in writers]
    for round_ in range(3):
        key = f"artifacts/credit/race-{round_}"
        puts = [
            lambda s=s, w=w, k=key: s.put_artifact(w, k)
            for s, w in zip(stores, writers, strict=True)
        ]
        outcomes = race(puts)
        winners = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, str)]
        assert len(winners) == 1, outcomes
        for outcome in outcomes[: winners[0]] + outcomes[winners[0] + 1 :]:
            assert isinstance(outcome, ConflictError), outcome
            assert key in str(outcome) and artifact.ONNX in str(outcome)
        fetched = stores[0].get_artifact(outcomes[winners[0]], tmp_path / f"round-{round_}")
        winner = writers[winners[0]]
        for name in (*FILES, artifact.MANIFEST):
            assert (fetched / name).read_bytes() == (winner / name).read_bytes(), name


def test_racing_writers_of_the_same_artifact_all_succeed(
    make_store: Callable[..., BlobArtifactStore], sealed: Callable[..., Path], tmp_path: Path
) -> None:
    local = sealed()
    stores = [make_store() for _ in range(4)]
    outcomes = race([lambda s=s: s.put_artifact(local, KEY) for s in stores])
    assert outcomes == [stores[0].uri_for(KEY)] * 4
    assert artifact.verify(stores[0].get_artifact(outcomes[0], tmp_path / "f"))


def test_a_writer_waits_for_anothers_claim_then_gives_up_with_a_conflict(
    make_store: Callable[..., BlobArtifactStore],
    blobs: BlobServiceClient,
    azure_outputs: dict[str, Any],
    sealed: Callable[..., Path],
) -> None:
    claim = blobs.get_blob_client(azure_outputs["containers"]["models"], f"{KEY}/{CLAIM}")
    claim.upload_blob(b"")
    held = claim.acquire_lease(-1)  # another writer, still storing
    store = make_store(claim_timeout=0.5)
    with pytest.raises(ConflictError, match=f"{re.escape(KEY)}: another writer"):
        store.put_artifact(sealed(), KEY)
    held.release()
    assert store.put_artifact(sealed("later"), KEY) == store.uri_for(KEY)
