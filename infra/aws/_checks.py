"""Argument checks only the AWS components need (the shared ones: `infra.common.checks`)."""

from __future__ import annotations

from typing import Any

# The only values CloudWatch Logs accepts for a retention period:
# https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip


def check_log_retention(component: str, days: int) -> None:
    if days not in LOG_RETENTION_DAYS:
        raise ValueError(
            f"{component}: log_retention_days={days!r} is not a CloudWatch Logs retention "
            f"period; choose one of {list(LOG_RETENTION_DAYS)}"
        )


def check_arn(component: str, field: str, value: Any) -> None:
    """Check an ARN given as a plain string; Outputs are resolved later and skipped."""
    if isinstance(value, str) and not value.startswith("arn:"):
        raise ValueError(f"{component}: {field} must be an ARN, got {value!r}")
