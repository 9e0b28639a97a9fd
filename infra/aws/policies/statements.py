"""The document shape and the statements several role policies share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Document = dict[str, Any]
Statement = dict[str, Any]

VERSION = "2012-10-17"

# Pulling an image from one repository, and pushing one to it. ecr:GetAuthorizationToken
# (the registry login) supports no resource-level permissions and is granted on its own.
# https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-push-iam.html
ECR_PULL_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
)
ECR_PUSH_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
)


def document(*statements: Statement) -> Document:
    return {"Version": VERSION, "Statement": list(statements)}


def via_services(region: str, services: Sequence[str]) -> list[str]:
    """``kms:ViaService`` values: the named AWS services in ``region``."""
    return [f"{s}.{region}.amazonaws.com" for s in services]


def objects(bucket: str, prefixes: Iterable[str]) -> list[str]:
    return [f"{bucket}/{prefix}*" for prefix in prefixes]


def allow(sid: str, actions: str | Sequence[str], resource: Any, **condition: Any) -> Statement:
    """An Allow statement; ``condition`` (operator -> {key: value}) when given."""
    statement: Statement = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": actions if isinstance(actions, str) else list(actions),
        "Resource": resource,
    }
    if condition:
        statement["Condition"] = condition
    return statement


def list_prefixes(sid: str, bucket: str, prefixes: Sequence[str]) -> Statement:
    """ListBucket on ``bucket``, only under ``prefixes`` (``s3:prefix`` condition)."""
    return allow(
        sid, "s3:ListBucket", bucket, StringLike={"s3:prefix": [f"{p}*" for p in prefixes]}
    )


def kms_via(
    sid: str, key_arn: str, actions: Sequence[str], region: str, services: Sequence[str]
) -> Statement:
    """Use of the stack key, only through the named AWS services (never called directly)."""
    return allow(
        sid,
        list(actions),
        key_arn,
        StringEquals={"kms:ViaService": via_services(region, services)},
    )


def ecr_login(sid: str = "EcrLogin") -> Statement:
    # ecr:GetAuthorizationToken supports no resource-level permissions: the token is for the
    # whole registry, and the repository statements decide what it may pull or push.
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerregistry.html
    return allow(sid, "ecr:GetAuthorizationToken", "*")


def put_metrics(sid: str, namespaces: Sequence[str]) -> Statement:
    # cloudwatch:PutMetricData supports no resource-level permissions; the namespace
    # condition is what scopes it.
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html
    return allow(
        sid,
        "cloudwatch:PutMetricData",
        "*",
        StringEquals={"cloudwatch:namespace": list(namespaces)},
    )


def secret_use(
    sid: str,
    actions: Sequence[str],
    secret_arn: str,
    kms_key_arn: str,
    region: str,
    key_actions: Sequence[str],
) -> list[Statement]:
    """``actions`` on one secret, and the stack key it is encrypted with, only through
    Secrets Manager (``<sid>WithStackKey``)."""
    return [
        allow(sid, list(actions), secret_arn),
        kms_via(f"{sid}WithStackKey", kms_key_arn, key_actions, region, ["secretsmanager"]),
    ]
