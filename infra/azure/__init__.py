"""The Azure side of Tandem: one ComponentResource per concern, wired by `build_azure_platform`.

Importing this package stays light (no Pulumi): `infra.azure.config`, `names`, `roles` are
plain code the stack config and the tests load without the Pulumi SDK; the platform module
(and pulumi-azure-native, only the submodules it uses) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulumi import ResourceOptions

    from infra.azure.platform import AzurePlatform
    from infra.config import StackConfig


def build_azure_platform(
    cfg: StackConfig, stack: str, opts: ResourceOptions | None = None
) -> AzurePlatform:
    """Build every Azure component of ``stack`` from its config (a ``tandem:azure:Platform``);
    its ``outputs()`` are the stack's Azure outputs."""
    from infra.azure.platform import AzurePlatform

    return AzurePlatform(cfg.name_prefix, cfg, stack, opts)


def __getattr__(name: str) -> Any:
    if name == "AzurePlatform":
        from infra.azure.platform import AzurePlatform

        return AzurePlatform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
