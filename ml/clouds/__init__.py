"""Cloud adapters behind one `connect(cloud, outputs)` call.

An adapter is built from a stack's outputs alone (`pulumi stack output --json`, or the
`outputs.json` the local stack writes), never from names repeated by hand.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ml.clouds.base import Stack
from ml.errors import ConfigError

CLOUDS = ("local", "aws", "azure")


def connect(cloud: str, outputs: Mapping[str, Any]) -> Stack:
    """Build the Stack for `cloud` from its stack outputs."""
    if cloud not in CLOUDS:
        raise ConfigError(f"unknown cloud {cloud!r}: expected one of {', '.join(CLOUDS)}")
    try:
        module = importlib.import_module(f"ml.clouds.{cloud}")
    except ModuleNotFoundError as exc:
        if exc.name == f"ml.clouds.{cloud}":
            raise ConfigError(f"the {cloud} adapter is not part of this release yet") from None
        raise ConfigError(  # the cloud's SDK is an optional extra
            f"the {cloud} adapter needs its extra: pip install 'tandem-mlops[{cloud}]' ({exc})"
        ) from exc
    except ImportError as exc:
        raise ConfigError(
            f"the {cloud} adapter needs its extra: pip install 'tandem-mlops[{cloud}]' ({exc})"
        ) from exc
    return module.connect(dict(outputs))
