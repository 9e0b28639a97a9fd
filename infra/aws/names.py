"""Every AWS resource name derived from the stack config, in one place.

The components create resources under these names and the policies name them in advance
(a key policy names roles that do not exist yet, a CI policy names the function), so both
compute them here, from the name prefix alone. No Pulumi here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from contract import layout, naming

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

    def function(self, model: str) -> str:
        """One serving function per model (at most 24 + 1 + 32 + 6 = 63 characters)."""
        return f"{self.prefix}-{model}-serve"

    def function_log_group(self, model: str) -> str:
        # Lambda writes to this group, always:
        # https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs.html
        return lambda_log_group(self.function(model))

    @property
    def function_log_group_pattern(self) -> str:
        """Every serving function's log group (the key policy lets CloudWatch Logs use the
        key for these)."""
        return lambda_log_group(f"{self.prefix}-*")

    @property
    def sagemaker_role(self) -> str:
        return f"{self.prefix}-sagemaker-execution"

    def lambda_role(self, model: str) -> str:
        """One execution role per serving function (at most 24 + 1 + 32 + 7 = 64)."""
        return f"{self.prefix}-{model}-lambda"

    @property
    def ci_role(self) -> str:
        return f"{self.prefix}-ci-deploy"

    @property
    def training_repository(self) -> str:
        """The stack's ECR repository for Tandem's training image (deploy/training/)."""
        return f"{self.prefix}-training"

    @property
    def serving_repository(self) -> str:
        """The stack's ECR repository for Tandem's serving image (deploy/Dockerfile)."""
        return f"{self.prefix}-serving"

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


# IAM role names and Lambda function names: at most 64 characters.
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html
# https://docs.aws.amazon.com/lambda/latest/api/API_CreateFunction.html
ROLE_NAME_MAX = FUNCTION_NAME_MAX = 64
# The Lambda code archive's key in the models bucket (outside every prefix the ML side uses).
LAMBDA_CODE_PREFIX = layout.LAMBDA_CODE


def model_name_problems(prefix: str, model: str) -> list[str]:
    """What of ``model``'s per-model resources would not fit its service's limit ([] if all do)."""
    names = AwsNames(prefix)
    problems = []
    for kind, name, limit in (
        ("Lambda function", names.function(model), FUNCTION_NAME_MAX),
        ("IAM role", names.lambda_role(model), ROLE_NAME_MAX),
    ):
        if len(name) > limit:
            problems.append(f"{kind} name {name!r} is {len(name)} characters (max {limit})")
    return problems


def lambda_archive_key(archive_name: str) -> str:
    return f"{LAMBDA_CODE_PREFIX}{archive_name}"


def lambda_log_group(function_name: str) -> str:
    """A Lambda function's own log group."""
    return f"/aws/lambda/{function_name}"
