"""The stack's pseudonymisation key (contract.privacy), in Secrets Manager.

The Pulumi program creates the secret without a value, so the key never enters Pulumi's
state; the first reader sets it. Every writer sends the same ClientRequestToken, so Secrets
Manager keeps the first value and refuses a different second one: of two first readers,
both end up with the same key.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from contract import privacy
from ml.clouds.aws.common import _code, translated
from ml.errors import ConfigError

FIRST_VERSION_TOKEN = "tandem-pseudonym-key-v1-00000000000000"  # 32-64 characters


def pseudonym_key(secretsmanager: Any, secret_arn: str) -> Callable[[], bytes]:
    cache: list[bytes] = []

    def read() -> bytes:
        if not cache:
            try:
                cache.append(_read_or_create(secretsmanager, secret_arn))
            except (ClientError, BotoCoreError) as exc:
                raise translated(exc) from exc
        return cache[0]

    return read


def _read_or_create(secretsmanager: Any, secret_arn: str) -> bytes:
    try:
        value = secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"]
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise
        fresh = base64.b64encode(secrets.token_bytes(privacy.KEY_BYTES)).decode()
        try:
            secretsmanager.put_secret_value(
                SecretId=secret_arn, SecretString=fresh, ClientRequestToken=FIRST_VERSION_TOKEN
            )
        except ClientError as lost:
            if _code(lost) not in ("ResourceExistsException", "InvalidRequestException"):
                raise
        value = secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"]
    key = base64.b64decode(value)
    if len(key) != privacy.KEY_BYTES:
        raise ConfigError(f"{secret_arn}: not a pseudonymisation key of {privacy.KEY_BYTES} bytes")
    return key
