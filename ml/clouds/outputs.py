"""Where a stack's outputs come from: one reader for every cloud.

An adapter is built from outputs alone (`clouds.connect(cloud, outputs)`). They come from a
file the user names (`pulumi stack output --json --show-secrets > dev.json`), from the Pulumi
CLI itself, or, for the local stack, from the `outputs.json` it writes on first use. A stack
that builds both clouds exports the Azure outputs nested under `azure` beside the AWS ones
(`contract.outputs.cloud_half`): each cloud gets its own half.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from contract.outputs import AZURE_IN_DUAL_STACK, cloud_half
from ml.errors import ConfigError


def pulumi_command(stack: str) -> list[str]:
    return ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack]


def read_outputs(cloud: str, stack: str, outputs_file: Path | None = None) -> dict[str, Any]:
    """The outputs of `stack` on `cloud`: from `outputs_file` when given, else the local
    stack's own file (created on first use), else `pulumi stack output`.

    Raises ConfigError naming the file, the stack or the command that failed, and when what
    was read is not a JSON object.
    """
    if outputs_file is not None:
        path = Path(outputs_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(f"{path}: cannot read stack outputs: {reason}") from None
        return _half(cloud, _as_object(text, f"{path}"), f"{path}")
    if cloud == "local":
        from ml.clouds.local import stack_outputs

        return stack_outputs(stack)
    return _half(cloud, _from_pulumi(cloud, stack), f"stack {stack!r}")


def _half(cloud: str, outputs: dict[str, Any], origin: str) -> dict[str, Any]:
    """`cloud`'s half of a stack with both clouds; any other stack's outputs as they are
    (the adapter checks they are its cloud's)."""
    if AZURE_IN_DUAL_STACK not in outputs:
        return outputs
    try:
        return cloud_half(cloud, outputs)
    except ValueError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def _from_pulumi(cloud: str, stack: str) -> dict[str, Any]:
    command = pulumi_command(stack)
    shown = " ".join(command)
    if shutil.which("pulumi") is None:
        raise ConfigError(
            f"--cloud {cloud} --stack {stack}: pass --outputs FILE (from `{shown}`) "
            "or install the Pulumi CLI"
        )
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise ConfigError(f"`{shown}` could not start: {exc}") from None
    if done.returncode != 0:
        detail = done.stderr.strip() or f"exit code {done.returncode}"
        raise ConfigError(f"`{shown}` failed for stack {stack!r}: {detail}")
    return _as_object(done.stdout, f"`{shown}`")


def _as_object(text: str, origin: str) -> dict[str, Any]:
    try:
        outputs = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{origin}: stack outputs are not JSON ({exc})") from None
    if not isinstance(outputs, dict):
        raise ConfigError(
            f"{origin}: stack outputs must be a JSON object of output names to values, "
            f"got {type(outputs).__name__}"
        )
    return outputs
