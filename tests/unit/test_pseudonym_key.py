"""The local stack's pseudonymisation key: made once, private to its owner, stable, per stack."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from contract import privacy
from ml.clouds.local import KEY_FILE


def test_the_key_is_made_once_readable_only_by_its_owner_and_stable(make_stack) -> None:
    stack = make_stack("dev")
    key = stack.pseudonym_key()
    assert len(key) == privacy.KEY_BYTES
    mode = stat.S_IMODE((Path(stack.outputs["root"]) / KEY_FILE).stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert make_stack("dev").pseudonym_key() == key  # a second connection reads the same key


def test_each_stack_has_its_own_key(make_stack) -> None:
    dev, staging = make_stack("dev").pseudonym_key(), make_stack("staging").pseudonym_key()
    assert dev != staging
    assert privacy.pseudonym("C-1001", dev) != privacy.pseudonym("C-1001", staging)


def test_concurrent_first_readers_agree(make_stack) -> None:
    stack = make_stack("dev")
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: stack.pseudonym_key(), range(16)))
    assert len(keys) == 1


def test_the_pseudonym_is_keyed_not_a_plain_hash() -> None:
    import hashlib

    value = "C-1001"
    keyed = privacy.pseudonym(value, b"k" * 32)
    assert keyed.startswith(privacy.PREFIX)
    assert hashlib.sha256(value.encode()).hexdigest()[:32] not in keyed
    assert keyed == privacy.pseudonym(value, b"k" * 32)
    assert keyed != privacy.pseudonym(value, b"j" * 32)
