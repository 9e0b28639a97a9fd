"""Every adapter promises callers Tandem's errors only (`ml/clouds/base.py`): this class
decorator wraps each public method so that its SDK's exceptions leave it translated."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ml.errors import TandemError

T = TypeVar("T", bound=type)


def translating(
    raised: tuple[type[BaseException], ...], translate: Callable[[Any], TandemError]
) -> Callable[[T], T]:
    """A class decorator: every public method of the class raises `translate(exc)` in place
    of any `raised` exception, chained to it. Generators (context managers) are left alone:
    they translate on their own."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except raised as exc:
                raise translate(exc) from exc

        return call

    def decorate(cls: T) -> T:
        for name, member in list(vars(cls).items()):
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            if inspect.isgeneratorfunction(member):
                continue
            setattr(cls, name, wrap(member))
        return cls

    return decorate
