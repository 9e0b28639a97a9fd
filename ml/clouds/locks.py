"""Named locks, re-entrant per thread: the lifecycle may hold `model:<name>` around a step
that holds it again (promote registers in the target under the target's lock).

A stack's lock kind supplies `_acquire(name, timeout)` returning a release callable; this
base makes nested holds in one thread free and keeps names safe for files and keys.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_SAFE = re.compile(r"[^a-z0-9.-]+")


def model_lock(model: str) -> str:
    return f"model:{model}"


def safe_name(name: str) -> str:
    """A lock name as a file or key name: `model:credit` -> `model.credit`."""
    return _SAFE.sub(".", name.lower()).strip(".") or "lock"


class ReentrantLocks:
    def __init__(self) -> None:
        self._held = threading.local()

    def _acquire(self, name: str, timeout: float) -> Callable[[], None]:
        raise NotImplementedError

    @contextmanager
    def hold(self, name: str, timeout: float = 120.0) -> Iterator[None]:
        held: dict[str, int] = self._held.__dict__.setdefault("names", {})
        if held.get(name):
            held[name] += 1
            try:
                yield
            finally:
                held[name] -= 1
            return
        release = self._acquire(name, timeout)
        held[name] = 1
        try:
            yield
        finally:
            held[name] = 0
            release()
