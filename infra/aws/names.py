"""Every AWS resource name derived from the stack config, in one place.

The components create resources under these names and the policies name them in advance
(a key policy names roles that do not exist yet, a CI policy names the function), so both
compute them here, from the name prefix alone. No Pulumi here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from contract import naming

if TYPE_CHECKING:
    from infra.config import StackConfig

BucketKind = Literal["data", "models", "logs"]
BUCKET_KINDS: tuple[BucketKind, ...] = ("data", "models", "logs")


@dataclass(frozen=True)
class AwsNames:
    """Names of one stack's AWS resources: ``<prefix>-...`` (limits in contract.naming)."""

    prefix: str

    def __post_init__(self) -> None:
        naming.check_name_prefix(self.prefix)

    @classmethod
    def of(cls, cfg: StackConfig) -> AwsNames:
        return cls(cfg.name_prefix)

    def bucket(self, kind: BucketKind, account_id: str) -> str:
        """S3 names are global: the account id keeps two accounts' stacks apart."""
        return f"{self.prefix}-{kind}-{account_id}"

    def model_package_group(self, model: str) -> str:
        """One SageMaker model package group per model; the adapter reads it from outputs."""
        return f"{self.prefix}-{model}"

    @property
    def key_alias(self) -> str:
        return f"alias/{self.prefix}"

    @property
    def function(self) -> str:
        return f"{self.prefix}-serve"

    @property
    def function_log_group(self) -> str:
        # Lambda writes to this group, always:
        # https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs.html
        return lambda_log_group(self.function)

    @property
    def sagemaker_role(self) -> str:
        return f"{self.prefix}-sagemaker-execution"

    @property
    def lambda_role(self) -> str:
        return f"{self.prefix}-lambda-serve"

    @property
    def ci_role(self) -> str:
        return f"{self.prefix}-ci-deploy"

    @property
    def training_repository(self) -> str:
        """The stack's ECR repository for Tandem's training image (deploy/training/)."""
        return f"{self.prefix}-training"

    @property
    def training_jobs(self) -> str:
        """Training job names start with this (``<prefix>-<model>-<run>``)."""
        return f"{self.prefix}-"

    @property
    def trail(self) -> str:
        return f"{self.prefix}-trail"

    @property
    def trail_log_group(self) -> str:
        return f"/tandem/{self.prefix}/cloudtrail"

    @property
    def alarm_topic(self) -> str:
        return f"{self.prefix}-alarms"

    def alarm(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    @property
    def alarm_pattern(self) -> str:
        """Every alarm of the stack is ``<prefix>-...``; policies match on it."""
        return f"{self.prefix}-*"

    @property
    def mlflow_server(self) -> str:
        return f"{self.prefix}-mlflow"

    @property
    def pseudonym_secret(self) -> str:
        """The Secrets Manager secret holding the key of personal-data pseudonyms."""
        return f"{self.prefix}/pseudonym-key"


def lambda_log_group(function_name: str) -> str:
    """A Lambda function's own log group."""
    return f"/aws/lambda/{function_name}"
