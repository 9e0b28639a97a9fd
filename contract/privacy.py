"""Personal data is never stored in the clear: a keyed hash (HMAC-SHA256) with a per-stack
secret stands in for it wherever a value must stay joinable (captures, reports).

An unkeyed hash of an ID is reversible by enumerating IDs; without the stack's key it is not.
The key lives with the stack: `<home>/<stack>/pseudonym.key` (mode 0600) locally, Secrets
Manager on AWS, Key Vault on Azure.
"""

from __future__ import annotations

import hashlib
import hmac

KEY_BYTES = 32
PREFIX = "hmac:"
DIGEST_CHARS = 32  # 128 bits: collisions stay negligible, the value stays short
# How the key is kept in Key Vault (written by the Pulumi program, read by the adapter): its
# KEY_BYTES, base64-encoded, as a secret of this content type.
KEY_VAULT_CONTENT_TYPE = "application/octet-stream; base64"


def pseudonym(value: object, key: bytes) -> str:
    """A stable pseudonym for `value` under `key`; the same value and key, the same result."""
    if len(key) < 16:
        raise ValueError("a pseudonymisation key must hold at least 16 bytes")
    mac = hmac.new(key, str(value).encode("utf-8", "surrogatepass"), hashlib.sha256)
    return PREFIX + mac.hexdigest()[:DIGEST_CHARS]
