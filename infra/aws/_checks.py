"""Argument checks shared by the AWS components: fail at `pulumi preview` with a message
that names the argument, instead of at `pulumi up` with an AWS error."""

from __future__ import annotations

import re
from typing import Any

# Short enough that `<prefix>-<suffix>` stays inside the tightest name limit we use
# (SageMaker model package groups: 63 characters).
NAME_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,22}[a-z0-9]$")

# The only values CloudWatch Logs accepts for a retention period:
# https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html
LOG_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
     2922, 3288, 3653}
)  # fmt: skip


def check_name_prefix(component: str, name_prefix: str) -> None:
    if not isinstance(name_prefix, str) or not NAME_PREFIX_RE.fullmatch(name_prefix):
        raise ValueError(
            f"{component}: name_prefix {name_prefix!r} must be 2-24 characters of lowercase "
            "letters, digits and hyphens, starting with a letter and not ending with a hyphen"
        )


def check_log_retention(component: str, days: int) -> None:
    if days not in LOG_RETENTION_DAYS:
        raise ValueError(
            f"{component}: log_retention_days={days!r} is not a CloudWatch Logs retention "
            f"period; choose one of {sorted(LOG_RETENTION_DAYS)}"
        )


def check_arn(component: str, field: str, value: Any) -> None:
    """Check an ARN given as a plain string; Outputs are resolved later and skipped."""
    if isinstance(value, str) and not value.startswith("arn:"):
        raise ValueError(f"{component}: {field} must be an ARN, got {value!r}")
