"""The stack config's AWS section, ``tandem:aws``: what only an AWS stack is built from.

    config:
      aws:region: eu-west-1              # where Pulumi's AWS provider reads it
      tandem:aws:
        lambda: {memory_mb: 2048, timeout_s: 30, reserved_concurrency: 20}
        s3: {noncurrent_version_expiration_days: 365, abort_incomplete_multipart_days: 7}
        mlflow: true
        training_image_tag: 2026.11.27-abc123
        serving_image_tag: 2026.11.27-abc123
        github_oidc_provider_arn: arn:aws:iam::123456789012:oidc-provider/token.actions...

Every field has a default, so a stack may leave the section out. `region` is not a key of
the section: it is filled from ``aws:region``. Errors name ``tandem:aws.<key>`` (see
`infra.config`). No Pulumi here.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Commercial, GovCloud and ISO partitions: us-east-1, us-gov-west-1, eu-central-2, ...
AWS_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag|@sha256:digest]
ECR_IMAGE_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)(:[A-Za-z0-9._-]{1,128}|@sha256:[a-f0-9]{64})$"
)
GITHUB_OIDC_PROVIDER_RE = re.compile(
    r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/token\.actions\.githubusercontent\.com$"
)

# Tandem's training image (deploy/training/Dockerfile: Python 3.11 and the project's
# dependencies) lives in the stack's own ECR repository, `<prefix>-training`, under an
# immutable tag. The default tag is the project version; a stack sets
# `tandem:aws.training_image_tag` to the tag its CI pushed.
# `tandem:aws.training_image_uri` overrides the whole image (e.g. one image shared by several
# stacks). The repository is created either way: an empty repository costs nothing, CI's
# push permission keeps one target, and turning the override on or off never tries to
# delete a repository that holds images (ECR refuses to delete a non-empty repository).
DEFAULT_TRAINING_IMAGE_TAG = DEFAULT_SERVING_IMAGE_TAG = "0.1.0"
# Docker's tag grammar: a word character, then up to 127 word characters, dots or hyphens.
# https://docs.docker.com/reference/cli/docker/image/tag/
IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LambdaConfig(_Section):
    """Size of the serving function. Limits from the Lambda quotas page:
    https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html"""

    memory_mb: int = Field(1024, ge=128, le=10240, strict=True)
    timeout_s: int = Field(30, ge=1, le=900, strict=True)
    # CKV_AWS_115: always set, so one model cannot starve the account's concurrency pool.
    reserved_concurrency: int = Field(5, ge=1, le=1000, strict=True)


class S3Config(_Section):
    """Lifecycle of the stack's buckets (CKV2_AWS_61, CKV_AWS_300)."""

    noncurrent_version_expiration_days: int = Field(90, ge=1, le=3650, strict=True)
    abort_incomplete_multipart_days: int = Field(7, ge=1, le=365, strict=True)


class AwsConfig(_Section):
    """``tandem:aws``: the AWS platform's settings."""

    region: str
    lambda_: LambdaConfig = Field(default_factory=LambdaConfig, alias="lambda")
    s3: S3Config = Field(default_factory=S3Config)
    mlflow: bool = Field(False, strict=True)
    training_image_tag: str = DEFAULT_TRAINING_IMAGE_TAG
    training_image_uri: str | None = None
    # The serving image (deploy/Dockerfile) in the stack's `<prefix>-serving` repository,
    # under the tag CI pushed: what the model packages name for SageMaker hosting.
    serving_image_tag: str = DEFAULT_SERVING_IMAGE_TAG
    # An account holds one GitHub OIDC provider: a second stack in the same account names
    # the existing one here instead of creating it again (with `tandem:github_oidc` set).
    github_oidc_provider_arn: str | None = None

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not AWS_REGION_RE.fullmatch(value):
            raise ValueError("must be an AWS region such as 'us-east-1'")
        return value

    @field_validator("training_image_tag", "serving_image_tag")
    @classmethod
    def _image_tag(cls, value: str) -> str:
        if not IMAGE_TAG_RE.fullmatch(value):
            raise ValueError(
                "must be an image tag: 1-128 letters, digits, '_', '.' or '-', not starting "
                "with '.' or '-'"
            )
        if value == "latest":
            # The repository's tags are immutable: "latest" could be pushed exactly once.
            raise ValueError(
                "must name one build (the repository's tags are immutable), not 'latest'"
            )
        return value

    @field_validator("training_image_uri")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not ECR_IMAGE_RE.fullmatch(value):
            raise ValueError(
                "must be an ECR image URI, <account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>"
            )
        return value

    @field_validator("github_oidc_provider_arn")
    @classmethod
    def _provider(cls, value: str | None) -> str | None:
        if value is not None and not GITHUB_OIDC_PROVIDER_RE.fullmatch(value):
            raise ValueError(
                "must be the ARN of the account's token.actions.githubusercontent.com OIDC provider"
            )
        return value
