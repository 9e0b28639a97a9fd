"""The audit trail: a multi-region CloudTrail trail with log file validation, encrypted
with the stack's KMS key, delivered to the logs bucket and to a CloudWatch Logs group,
recording S3 data events (reads and writes) on the data and models buckets.

CloudTrail checks its destinations when the trail is created, so two things must exist
before this component: the logs bucket policy carrying
``cloudtrail_bucket_policy_statements(...)``, and a key policy that lets CloudTrail and
CloudWatch Logs use the key (``policies.kms_key_policy`` with ``allow_cloudtrail``).
Pass the bucket policy resource in ``opts.depends_on``; the trail's ARN is predictable
(``trail_arn(...)``), so the bucket policy can be written before the trail exists.

Controls: CIS AWS 3.1, 3.2, 3.5, 3.8, 3.9; FSBP CloudTrail.1, .2, .4, .5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
from pulumi import Input, Output, ResourceOptions

from infra.aws._checks import check_arn, check_log_retention
from infra.aws.names import AwsNames
from infra.common.checks import check_name_prefix

CLOUDTRAIL_PRINCIPAL = "cloudtrail.amazonaws.com"
#: Key prefix of the trail's files in the logs bucket (``AuditArgs.logs_prefix`` default).
DEFAULT_LOGS_PREFIX = "cloudtrail"


def trail_arn(name_prefix: str, account_id: str, region: str, partition: str = "aws") -> str:
    """The ARN the trail will have: bucket and key policies name it before it exists."""
    return f"arn:{partition}:cloudtrail:{region}:{account_id}:trail/{AwsNames(name_prefix).trail}"


def cloudtrail_bucket_policy_statements(
    bucket_arn: str, prefix: str, account_id: str, trail_arn: str
) -> list[dict[str, Any]]:
    """Statements the logs bucket policy needs so that this trail (and only it) can
    deliver log files under ``<prefix>/AWSLogs/<account_id>/``.

    Plain strings in, plain dicts out: merge them into the bucket policy (inside an
    ``Output.apply`` when the values are Outputs). From
    https://docs.aws.amazon.com/awscloudtrail/latest/userguide/create-s3-bucket-policy-for-cloudtrail.html
    """
    key_prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return [
        {
            "Sid": "CloudTrailAclCheck",
            "Effect": "Allow",
            "Principal": {"Service": CLOUDTRAIL_PRINCIPAL},
            "Action": "s3:GetBucketAcl",
            "Resource": bucket_arn,
            # Confused-deputy guard: only our trail, not any trail that names this bucket.
            "Condition": {"StringEquals": {"aws:SourceArn": trail_arn}},
        },
        {
            "Sid": "CloudTrailWrite",
            "Effect": "Allow",
            "Principal": {"Service": CLOUDTRAIL_PRINCIPAL},
            "Action": "s3:PutObject",
            "Resource": f"{bucket_arn}/{key_prefix}AWSLogs/{account_id}/*",
            "Condition": {
                # CloudTrail always sends this ACL; with ObjectOwnership=BucketOwnerEnforced
                # the bucket owns the objects anyway, and the header is still accepted.
                "StringEquals": {
                    "s3:x-amz-acl": "bucket-owner-full-control",
                    "aws:SourceArn": trail_arn,
                }
            },
        },
    ]


def cloudtrail_logs_trust_policy() -> dict[str, Any]:
    """Trust policy of the role CloudTrail assumes to write to CloudWatch Logs: one
    service principal, nothing else (CKV_AWS_60/61)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": CLOUDTRAIL_PRINCIPAL},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def cloudtrail_logs_role_policy(log_group_arn: str, account_id: str) -> dict[str, Any]:
    """Permissions of that role: create streams and put events in the one log group.

    ``log_group_arn`` is the group ARN without the trailing ``:*``. CloudTrail names its
    streams ``<account>_CloudTrail_<region>``:
    https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-required-policy-for-cloudwatch-logs.html
    """
    streams = f"{log_group_arn}:log-stream:{account_id}_CloudTrail_*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CloudTrailDeliverToOneLogGroup",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": streams,
            }
        ],
    }


@dataclass
class AuditArgs:
    """Inputs of the audit trail.

    name_prefix: stack-wide prefix; the trail is ``<prefix>-trail``.
    kms_key_arn: the stack's customer-managed key; encrypts the log files and the log
        group (its key policy must carry the statements named in the module docstring).
    logs_bucket_name: the access-logs bucket; CloudTrail writes under ``logs_prefix``.
    data_bucket_arn, models_bucket_arn: buckets whose object reads and writes are logged.
    logs_prefix: S3 key prefix for the trail's files (no leading or trailing ``/``).
    log_retention_days: retention of the CloudWatch Logs copy (a CloudWatch Logs value).
    tags: applied to every resource.
    """

    name_prefix: str
    kms_key_arn: Input[str]
    logs_bucket_name: Input[str]
    data_bucket_arn: Input[str]
    models_bucket_arn: Input[str]
    logs_prefix: str = DEFAULT_LOGS_PREFIX
    log_retention_days: int = 365
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        check_name_prefix("Audit", self.name_prefix)
        check_log_retention("Audit", self.log_retention_days)
        for name in ("kms_key_arn", "data_bucket_arn", "models_bucket_arn"):
            check_arn("Audit", name, getattr(self, name))
        if not self.logs_prefix or self.logs_prefix != self.logs_prefix.strip("/"):
            raise ValueError(
                f"Audit: logs_prefix {self.logs_prefix!r} must be non-empty, with no leading "
                "or trailing '/'"
            )
        if "AWSLogs" in self.logs_prefix.split("/"):
            # CloudTrail appends AWSLogs/<account>/ itself; repeating it is a mistake.
            raise ValueError("Audit: logs_prefix must not contain 'AWSLogs'")


class Audit(pulumi.ComponentResource):
    """CloudTrail trail + its CloudWatch Logs group and delivery role."""

    log_group: aws.cloudwatch.LogGroup
    logs_role: aws.iam.Role
    logs_role_policy: aws.iam.RolePolicy
    trail: aws.cloudtrail.Trail

    def __init__(self, name: str, args: AuditArgs, opts: ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("tandem:aws:Audit", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)
        account_id = aws.get_caller_identity_output(opts=invoke_opts).account_id

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-trail-logs",
            name=AwsNames(args.name_prefix).trail_log_group,
            retention_in_days=args.log_retention_days,
            kms_key_id=args.kms_key_arn,
            tags=args.tags,
            opts=child_opts,
        )

        self.logs_role = aws.iam.Role(
            f"{name}-trail-logs-role",
            name=f"{args.name_prefix}-cloudtrail-logs",
            description="CloudTrail delivery to the audit log group",
            assume_role_policy=json.dumps(cloudtrail_logs_trust_policy()),
            tags=args.tags,
            opts=child_opts,
        )
        self.logs_role_policy = aws.iam.RolePolicy(
            f"{name}-trail-logs-policy",
            role=self.logs_role.id,
            policy=Output.all(self.log_group.arn, account_id).apply(
                lambda v: json.dumps(cloudtrail_logs_role_policy(v[0], v[1]))
            ),
            opts=child_opts,
        )

        self.trail = aws.cloudtrail.Trail(
            f"{name}-trail",
            name=AwsNames(args.name_prefix).trail,
            s3_bucket_name=args.logs_bucket_name,
            s3_key_prefix=args.logs_prefix,
            is_multi_region_trail=True,
            include_global_service_events=True,
            enable_log_file_validation=True,
            enable_logging=True,
            kms_key_id=args.kms_key_arn,
            # CloudTrail wants the group ARN with the log-stream wildcard.
            cloud_watch_logs_group_arn=self.log_group.arn.apply(lambda arn: f"{arn}:*"),
            cloud_watch_logs_role_arn=self.logs_role.arn,
            event_selectors=[
                aws.cloudtrail.TrailEventSelectorArgs(
                    # Management events stay on; "All" = read and write data events.
                    include_management_events=True,
                    read_write_type="All",
                    data_resources=[
                        aws.cloudtrail.TrailEventSelectorDataResourceArgs(
                            type="AWS::S3::Object",
                            # "<bucket arn>/" selects every object in the bucket.
                            values=[
                                Output.concat(args.data_bucket_arn, "/"),
                                Output.concat(args.models_bucket_arn, "/"),
                            ],
                        )
                    ],
                )
            ],
            tags=args.tags,
            # CreateTrail validates that the role can write to the group.
            opts=ResourceOptions.merge(
                child_opts, ResourceOptions(depends_on=[self.logs_role_policy])
            ),
        )

        self.register_outputs(
            {
                "trail_arn": self.trail.arn,
                "log_group_name": self.log_group.name,
            }
        )
