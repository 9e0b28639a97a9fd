"""The Pulumi program: read the stack config, build each configured cloud, export outputs.

The outputs are the whole contract with the ML side: `ml/clouds/aws/` is built from
`pulumi stack output --json` alone.
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

from infra import config  # noqa: E402


def main() -> None:
    cfg = config.from_pulumi()
    if "aws" in cfg.clouds:
        from infra.aws import build_aws_platform, serving

        # Every model's function runs this one archive (uploaded once, through S3).
        archive = serving.lambda_archive(serving.default_build_dir())
        platform = build_aws_platform(cfg, pulumi.get_stack(), archive_path=str(archive))
        for key, value in platform.outputs().items():
            pulumi.export(key, value)
    if "azure" in cfg.clouds:
        raise config.ConfigError(
            f"stack {cfg.stack!r}: tandem:clouds: 'azure' is not built by this program yet"
        )


main()
