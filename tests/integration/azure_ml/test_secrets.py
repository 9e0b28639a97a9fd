"""The pseudonymisation key in Key Vault: written by the first reader, the oldest version wins,
read once per process."""

from __future__ import annotations

import base64
import threading
import time
from datetime import timedelta

import pytest

from contract import privacy
from ml.clouds.azure.common import AzureOutputs, PlaceholderCredential
from ml.clouds.azure.secrets import pseudonym_key
from ml.errors import ConfigError
from tests.azure_fakes import AzureFake

SECRET = "/secrets/{name}"
# long enough for Key Vault's whole-second stamps on this one machine; 5 s in the cloud
SETTLE = timedelta(seconds=1.1)


def reader(cfg: AzureOutputs):
    return pseudonym_key(cfg, PlaceholderCredential(), settle=SETTLE)


def key_of(cfg: AzureOutputs) -> bytes:
    return reader(cfg)()


def test_the_first_reader_writes_the_key_and_every_later_one_reads_it(
    cfg: AzureOutputs, fake: AzureFake
) -> None:
    read = reader(cfg)
    assert fake.operations() == []  # nothing is read until the key is needed
    key = read()
    assert len(key) == privacy.KEY_BYTES
    assert fake.secret_versions(cfg.pseudonym_secret_name) == [base64.b64encode(key).decode()]
    before = len(fake.operations())
    assert read() == key  # kept: no second request
    assert len(fake.operations()) == before
    assert key_of(cfg) == key  # another process reads the same key
    assert len(fake.secret_versions(cfg.pseudonym_secret_name)) == 1
    assert {template for _, template in fake.operations()} == {
        "/secrets/{name}/versions", "/secrets/{name}", "/secrets/{name}/{version}",
    }  # fmt: skip
    assert fake.unanswered() == []


def test_the_oldest_version_is_the_key_whoever_wrote_later(
    cfg: AzureOutputs, fake: AzureFake
) -> None:
    first, second = (bytes([n]) * privacy.KEY_BYTES for n in (1, 2))
    now = time.time()
    fake.set_secret(cfg.pseudonym_secret_name, base64.b64encode(first).decode(), now - 100)
    fake.set_secret(cfg.pseudonym_secret_name, base64.b64encode(second).decode(), now - 50)
    assert key_of(cfg) == first
    assert ("PUT", SECRET) not in fake.operations()  # a reader that finds a key writes none


def test_first_readers_racing_agree_on_one_key(cfg: AzureOutputs, fake: AzureFake) -> None:
    start = threading.Barrier(6)
    keys: list[bytes] = []

    def first_reader() -> None:
        read = reader(cfg)
        start.wait(30)
        keys.append(read())

    threads = [threading.Thread(target=first_reader) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(keys) == 6 and len(set(keys)) == 1
    assert base64.b64encode(keys[0]).decode() in fake.secret_versions(cfg.pseudonym_secret_name)


def test_a_secret_that_is_not_a_key_is_refused_by_name(cfg: AzureOutputs, fake: AzureFake) -> None:
    fake.set_secret(cfg.pseudonym_secret_name, "not base64 of 32 bytes", time.time() - 60)
    with pytest.raises(ConfigError, match=f"secret '{cfg.pseudonym_secret_name}'"):
        key_of(cfg)


def test_a_vault_that_refuses_says_so_in_tandems_words(cfg: AzureOutputs, fake: AzureFake) -> None:
    fake.fail("GET", "/secrets/", 403, "Forbidden", "the caller lacks secrets/readMetadata")
    with pytest.raises(Exception) as caught:
        key_of(cfg)
    assert type(caught.value).__module__ == "ml.errors"
    assert "access denied" in str(caught.value) and "readMetadata" in str(caught.value)


def test_the_oldest_is_taken_only_once_no_write_in_flight_can_rank_before_it(
    cfg: AzureOutputs, fake: AzureFake
) -> None:
    """A first reader's write lands, stamped a moment before the one already listed: the key
    is still the oldest, because a young oldest is listed again after it settles."""
    name = cfg.pseudonym_secret_name
    landed, late = (bytes([n]) * privacy.KEY_BYTES for n in (1, 2))
    now = time.time()
    fake.set_secret(name, base64.b64encode(landed).decode(), now)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        if not waits:  # while this reader waits, another one's write lands
            fake.set_secret(name, base64.b64encode(late).decode(), now - 1)
        waits.append(seconds)
        time.sleep(seconds)

    assert pseudonym_key(cfg, PlaceholderCredential(), settle=SETTLE, sleep=sleep)() == late
    assert waits
