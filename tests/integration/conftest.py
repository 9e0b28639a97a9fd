"""What every AWS integration test shares: Lambda `Invoke` answered by the stack's real
handler (moto runs no function without Docker; tests/contract/lambda_boundary.py)."""

from __future__ import annotations

from collections.abc import Iterator

import botocore.handlers
import pytest

from tests.contract.lambda_boundary import INVOKE_EVENT, LambdaInvoke


@pytest.fixture(autouse=True, scope="session")
def lambda_invoke() -> Iterator[LambdaInvoke]:
    """Every lifecycle deploy ends with a smoke request through `Invoke`. Session-wide:
    botocore copies its handlers into each session when the session is made, and some
    tests make theirs in module fixtures."""
    invoke = LambdaInvoke()
    handlers = botocore.handlers.BUILTIN_HANDLERS
    entry = (INVOKE_EVENT, invoke)
    handlers.insert(0, entry)
    try:
        yield invoke
    finally:
        handlers.remove(entry)
