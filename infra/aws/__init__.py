"""The AWS side of Tandem: one ComponentResource per concern, wired by `build_aws_platform`.

Importing this package stays light (no Pulumi): `infra.aws.policies` is plain code that
the least-privilege tests load without the Pulumi SDK; the platform module is loaded on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulumi import ResourceOptions

    from infra.aws.platform import AwsPlatform
    from infra.config import StackConfig


def build_aws_platform(
    cfg: StackConfig, stack: str, opts: ResourceOptions | None = None, **kwargs: Any
) -> AwsPlatform:
    """Build every AWS component of ``stack`` from its config (a ``tandem:aws:Platform``);
    its ``outputs()`` are the stack outputs."""
    from infra.aws.platform import AwsPlatform

    return AwsPlatform(cfg.name_prefix, cfg, stack, opts, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "AwsPlatform":
        from infra.aws.platform import AwsPlatform

        return AwsPlatform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
