"""The stack's pseudonymisation key (contract.privacy), a Key Vault secret.

The value is the key's bytes in base64, as on every cloud. The Pulumi program creates the
secret (infra/azure/keyvault.py), so a reader normally just reads it; a stack whose secret has
no enabled version (deleted by hand, or made by another program) gets one from its first
reader, if that identity may write secrets (CI's may not: Key Vault Secrets User). Key Vault
has no conditional write, so two first readers may both write; the key is therefore the
secret's OLDEST enabled version (by creation time, then version id), never "the latest".
Key Vault stamps versions in whole seconds and a write may still be landing while another
reader lists, so the oldest is only taken once it is `settle` old (five seconds, once in a
stack's life): by then every version that could rank before it is listed, and every reader,
first or later, picks the same one.

Read once per process, on first use. Readers need `secrets/getSecret` and
`secrets/readMetadata` (Key Vault Secrets User); the first one also `secrets/setSecret`.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ResourceNotFoundError

from contract import privacy
from ml.clouds.azure.common import AzureOutputs, translated
from ml.errors import ConfigError

# Key Vault only records an expiry on a secret (the baseline asks for one, CKV_AZURE_41); the
# key stays readable after it, and rotating it would break every join on its pseudonyms.
EXPIRY = timedelta(days=3 * 365)
# Key Vault's creation times are whole seconds; allow for that, clock skew and a write in flight
SETTLE = timedelta(seconds=5)


def secret_client(cfg: AzureOutputs, cred: TokenCredential) -> Any:
    """Key Vault's SecretClient for the stack's vault, or for the emulator at `management_url`
    (whose address is not a vault's name: the challenge's resource cannot match it)."""
    from azure.keyvault.secrets import SecretClient

    if cfg.management_url:
        return SecretClient(cfg.management_url, cred, verify_challenge_resource=False)
    return SecretClient(cfg.key_vault_url, cred)


def pseudonym_key(
    cfg: AzureOutputs,
    cred: TokenCredential,
    *,
    settle: timedelta = SETTLE,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[], bytes]:
    """A callable returning the key, read from Key Vault on its first call and kept."""
    cache: list[bytes] = []
    lock = threading.Lock()

    def read() -> bytes:
        with lock:
            if not cache:
                try:
                    cache.append(_read_or_create(secret_client(cfg, cred), cfg, settle, sleep))
                except AzureError as exc:
                    raise translated(exc) from exc
        return cache[0]

    return read


def _oldest(client: Any, name: str) -> Any | None:
    """The properties of the secret's oldest enabled version, or None."""
    try:
        enabled = [v for v in client.list_properties_of_secret_versions(name) if v.enabled]
    except ResourceNotFoundError:
        return None
    never = datetime.max.replace(tzinfo=UTC)
    return min(enabled, key=lambda v: (v.created_on or never, v.version), default=None)


def _settled(client: Any, name: str, settle: timedelta, sleep: Callable[[float], None]) -> Any:
    """The oldest version once it is `settle` old: no version written later can rank before."""
    while True:
        oldest = _oldest(client, name)
        if oldest is None:
            return None
        age = datetime.now(UTC) - (oldest.created_on or datetime.now(UTC))
        if age >= settle:
            return oldest
        sleep((settle - age).total_seconds())


def _read_or_create(
    client: Any, cfg: AzureOutputs, settle: timedelta, sleep: Callable[[float], None]
) -> bytes:
    name = cfg.pseudonym_secret_name
    oldest = _settled(client, name, settle, sleep)
    if oldest is None:
        fresh = base64.b64encode(secrets.token_bytes(privacy.KEY_BYTES)).decode()
        client.set_secret(
            name,
            fresh,
            content_type=privacy.KEY_VAULT_CONTENT_TYPE,
            expires_on=datetime.now(UTC) + EXPIRY,
            tags={"tandem:stack": cfg.stack},
        )
        oldest = _settled(client, name, settle, sleep)  # ours, or a first reader's before it
    value = client.get_secret(name, oldest.version).value or ""
    try:
        key = base64.b64decode(value, validate=True)
    except ValueError:
        key = b""
    if len(key) != privacy.KEY_BYTES:
        raise ConfigError(
            f"Key Vault secret {name!r} in {cfg.key_vault_url}: not a pseudonymisation key "
            f"(base64 of {privacy.KEY_BYTES} bytes)"
        )
    return key
