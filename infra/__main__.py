"""The Pulumi program: read the stack config, build each configured cloud, export outputs.

The outputs are the whole contract with the ML side: `ml/clouds/aws/` and `ml/clouds/azure/`
are built from `pulumi stack output --json` alone (`infra.program` says how a stack with
both clouds lays them out).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Pulumi runs this directory as a script; make the project root importable so that
# `infra.*` resolves the same way it does in the tests.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pulumi  # noqa: E402

from infra import config, program  # noqa: E402


def main() -> None:
    cfg = config.from_pulumi()
    aws_kwargs = {}
    if "aws" in cfg.clouds:
        from infra.aws import serving

        # Every model's function runs this one archive (uploaded once, through S3).
        aws_kwargs["archive_path"] = str(serving.lambda_archive(serving.default_build_dir()))
    built = program.build(cfg, pulumi.get_stack(), **aws_kwargs)
    for key, value in built.outputs.items():
        pulumi.export(key, value)


main()
