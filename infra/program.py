"""The whole program as a function: build each cloud the stack lists, return its outputs.

`build` is what ``__main__`` runs under ``pulumi up`` and what the tests run under Pulumi's
mocks. A single-cloud stack's outputs are that cloud's (`contract.outputs.AWS` or
`AZURE`); a stack with both exports the AWS outputs at the top level and the Azure ones
under `contract.outputs.AZURE_IN_DUAL_STACK` (read back with `contract.outputs.cloud_half`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pulumi import Output

from contract.outputs import AZURE_IN_DUAL_STACK

if TYPE_CHECKING:
    from infra.aws.platform import AwsPlatform
    from infra.azure.platform import AzurePlatform
    from infra.config import StackConfig


@dataclass
class Program:
    """What `build` made: each cloud's platform (None when not listed) and the outputs."""

    aws: AwsPlatform | None = None
    azure: AzurePlatform | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


def build(cfg: StackConfig, stack: str, **aws_kwargs: Any) -> Program:
    """Build every cloud in ``cfg.clouds``; ``aws_kwargs`` go to the AWS platform
    (``archive_path``, ``build_dir``)."""
    program = Program()
    if "aws" in cfg.clouds:
        from infra.aws import build_aws_platform

        program.aws = build_aws_platform(cfg, stack, **aws_kwargs)
        program.outputs.update(program.aws.outputs())
    if "azure" in cfg.clouds:
        from infra.azure import build_azure_platform

        program.azure = build_azure_platform(cfg, stack)
        azure = program.azure.outputs()
        if program.aws is None:
            program.outputs.update(azure)
        else:
            program.outputs[AZURE_IN_DUAL_STACK] = Output.all(**azure)
    return program
