"""The stack's KMS key and its three buckets: data, models, logs.

Every bucket: versioning, all four public-access-block flags, ACLs disabled
(BucketOwnerEnforced), a bucket policy that denies non-TLS requests, lifecycle rules that
abort incomplete multipart uploads and expire noncurrent versions.

The data and models buckets are encrypted with the stack's customer-managed key (SSE-KMS,
bucket keys on) and send server access logs to the logs bucket.

The logs bucket is the one exception to SSE-KMS, on purpose: it is the target of S3
server access logging, and the S3 documentation supports only SSE-S3 (AES256) default
encryption on a server access log target bucket
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/enable-server-access-logging.html,
"target bucket" requirements). It is still encrypted at rest (SSE-S3), versioned, private
and TLS-only, and it does not log to itself (that would be an endless loop of log records).
`LOGS_BUCKET_WAIVERS` records both exceptions with their reasons, for the policy pack.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
from pulumi import Input, Output, ResourceOptions

from infra.aws import policies
from infra.aws.names import BUCKET_KINDS, AwsNames

# pulumi-aws v7's split S3 resources take long argument class names.
_SseByDefault = (
    aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs
)

# Buckets that hold the stack's data and models: SSE-KMS with the stack key, access-logged.
CMK_BUCKETS = ("data", "models")

# Security-baseline rows that do not apply to the logs bucket, with the reason.
LOGS_BUCKET_WAIVERS = {
    "CKV_AWS_145": "S3 server access log target buckets support SSE-S3 only; the logs bucket "
    "uses SSE-S3 (AES256) default encryption",
    "CKV_AWS_18": "the logs bucket is the server access log target; logging it to itself "
    "would loop",
}


@dataclass
class StorageArgs:
    """Inputs of the storage component.

    name_prefix: stack-wide prefix (``tandem-dev``); used for the key alias.
    account_id, region: where the key and buckets live (key policy conditions need them).
    bucket_names: a name for each of ``data``, ``models``, ``logs`` (S3 names are global).
    key_user_role_arns: roles that may use the key (matched by ``aws:PrincipalArn``, so
        they need not exist yet).
    deployer_principal_arns: who runs ``pulumi up``; may use the key only through Lambda,
        S3, SNS, ECR and Secrets Manager. See policies.kms_key_policy.
    key_log_group_patterns: log group names (``*`` wildcards) CloudWatch Logs may encrypt
        with the key, e.g. ``/aws/lambda/<prefix>-*``.
    logs_bucket_statements: ``(logs_bucket_arn, account_id) -> [statement, ...]``: more
        statements for the logs bucket policy (e.g. CloudTrail delivery, from the audit
        component), added after the TLS denies and the access-log delivery statement.
    noncurrent_version_expiration_days: days a replaced or deleted object version is kept.
    abort_incomplete_multipart_days: days before an unfinished multipart upload is removed.
    log_expiration_days: days log files (access logs, trail files) stay current in the
        logs bucket; then they become noncurrent and expire like any other version.
    force_destroy: allow `pulumi destroy` to delete non-empty buckets (dev stacks only).
    tags: applied to every resource that takes tags.
    """

    name_prefix: str
    account_id: Input[str]
    region: str
    bucket_names: Mapping[str, Input[str]]
    key_user_role_arns: Input[Sequence[Input[str]]]
    deployer_principal_arns: Input[Sequence[Input[str]]] = ()
    key_log_group_patterns: Sequence[str] = ("*",)
    logs_bucket_statements: Callable[[str, str], list[dict]] | None = None
    noncurrent_version_expiration_days: int = 90
    abort_incomplete_multipart_days: int = 7
    log_expiration_days: int = 365
    force_destroy: bool = False
    partition: str = "aws"
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        missing = sorted(set(BUCKET_KINDS) - set(self.bucket_names))
        if missing:
            raise ValueError(f"Storage: bucket_names is missing {missing}")
        if isinstance(self.key_user_role_arns, (list, tuple)) and not self.key_user_role_arns:
            raise ValueError("Storage: key_user_role_arns must name at least one role")
        for name in (
            "noncurrent_version_expiration_days",
            "abort_incomplete_multipart_days",
            "log_expiration_days",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Storage: {name} must be a positive integer, got {value!r}")


class Storage(pulumi.ComponentResource):
    """KMS key + alias; data, models and logs buckets with their baseline settings.

    Children are attributes, keyed by bucket kind where there is one per bucket:
    ``buckets``, ``versioning``, ``encryption``, ``public_access_blocks``, ``ownership``,
    ``policies``, ``lifecycles``, ``access_logging`` (data and models only).
    """

    key: aws.kms.Key
    key_alias: aws.kms.Alias
    buckets: dict[str, aws.s3.Bucket]
    versioning: dict[str, aws.s3.BucketVersioning]
    encryption: dict[str, aws.s3.BucketServerSideEncryptionConfiguration]
    public_access_blocks: dict[str, aws.s3.BucketPublicAccessBlock]
    ownership: dict[str, aws.s3.BucketOwnershipControls]
    policies: dict[str, aws.s3.BucketPolicy]
    lifecycles: dict[str, aws.s3.BucketLifecycleConfiguration]
    access_logging: dict[str, aws.s3.BucketLogging]

    def __init__(self, name: str, args: StorageArgs, opts: ResourceOptions | None = None):
        args.validate()
        super().__init__("tandem:aws:Storage", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        tags = args.tags

        key_policy = Output.all(
            args.account_id,
            Output.from_input(args.key_user_role_arns),
            Output.from_input(args.deployer_principal_arns),
        ).apply(
            lambda a: json.dumps(
                policies.kms_key_policy(
                    a[0],
                    args.region,
                    a[1],
                    deployer_principal_arns=a[2],
                    log_group_patterns=args.key_log_group_patterns,
                    partition=args.partition,
                )
            )
        )
        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"{args.name_prefix}: data, models, logs, alarms",
            enable_key_rotation=True,
            rotation_period_in_days=365,
            # Longest waiting period: a scheduled deletion can be cancelled for 30 days.
            deletion_window_in_days=30,
            policy=key_policy,
            tags=tags,
            opts=child_opts,
        )
        self.key_alias = aws.kms.Alias(
            f"{name}-key-alias",
            name=AwsNames(args.name_prefix).key_alias,
            target_key_id=self.key.key_id,
            opts=child_opts,
        )

        self.buckets = {}
        self.versioning = {}
        self.encryption = {}
        self.public_access_blocks = {}
        self.ownership = {}
        self.policies = {}
        self.lifecycles = {}
        self.access_logging = {}

        for kind in BUCKET_KINDS:
            bucket = aws.s3.Bucket(
                f"{name}-{kind}",
                bucket=args.bucket_names[kind],
                force_destroy=args.force_destroy,
                tags={**tags, "tandem:bucket": kind},
                opts=child_opts,
            )
            self.buckets[kind] = bucket
            bucket_opts = ResourceOptions.merge(child_opts, ResourceOptions(parent=bucket))

            self.versioning[kind] = aws.s3.BucketVersioning(
                f"{name}-{kind}-versioning",
                bucket=bucket.id,
                versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                    status="Enabled"
                ),
                opts=bucket_opts,
            )
            if kind in CMK_BUCKETS:
                default = _SseByDefault(sse_algorithm="aws:kms", kms_master_key_id=self.key.arn)
                bucket_key = True
            else:
                # Server access log targets: SSE-S3 only (see the module docstring).
                default = _SseByDefault(sse_algorithm="AES256")
                bucket_key = False
            self.encryption[kind] = aws.s3.BucketServerSideEncryptionConfiguration(
                f"{name}-{kind}-encryption",
                bucket=bucket.id,
                rules=[
                    aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                        apply_server_side_encryption_by_default=default,
                        bucket_key_enabled=bucket_key,
                    )
                ],
                opts=bucket_opts,
            )
            self.public_access_blocks[kind] = aws.s3.BucketPublicAccessBlock(
                f"{name}-{kind}-public-access-block",
                bucket=bucket.id,
                block_public_acls=True,
                block_public_policy=True,
                ignore_public_acls=True,
                restrict_public_buckets=True,
                opts=bucket_opts,
            )
            self.ownership[kind] = aws.s3.BucketOwnershipControls(
                f"{name}-{kind}-ownership",
                bucket=bucket.id,
                rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
                opts=bucket_opts,
            )
            rules = [
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-multipart-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=args.abort_incomplete_multipart_days
                    ),
                ),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-noncurrent-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.noncurrent_version_expiration_days
                    ),
                ),
            ]
            if kind == "logs":
                rules.append(
                    aws.s3.BucketLifecycleConfigurationRuleArgs(
                        id="expire-logs",
                        status="Enabled",
                        filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),
                        expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                            days=args.log_expiration_days
                        ),
                    )
                )
            self.lifecycles[kind] = aws.s3.BucketLifecycleConfiguration(
                f"{name}-{kind}-lifecycle",
                bucket=bucket.id,
                rules=rules,
                # Noncurrent-version rules need versioning in place first.
                opts=ResourceOptions.merge(
                    bucket_opts, ResourceOptions(depends_on=[self.versioning[kind]])
                ),
            )

        logs_bucket = self.buckets["logs"]
        for kind in BUCKET_KINDS:
            bucket = self.buckets[kind]
            if kind == "logs":
                policy = Output.all(
                    bucket.arn,
                    [self.buckets[k].arn for k in CMK_BUCKETS],
                    args.account_id,
                ).apply(lambda a: json.dumps(self._logs_bucket_policy(args, a[0], a[1], a[2])))
            else:
                policy = bucket.arn.apply(
                    lambda arn: json.dumps(policies.tls_only_bucket_policy(arn))
                )
            self.policies[kind] = aws.s3.BucketPolicy(
                f"{name}-{kind}-policy",
                bucket=bucket.id,
                policy=policy,
                # S3 rejects policy writes that race the public access block.
                opts=ResourceOptions.merge(
                    child_opts,
                    ResourceOptions(parent=bucket, depends_on=[self.public_access_blocks[kind]]),
                ),
            )

        for kind in CMK_BUCKETS:
            bucket = self.buckets[kind]
            self.access_logging[kind] = aws.s3.BucketLogging(
                f"{name}-{kind}-access-logging",
                bucket=bucket.id,
                target_bucket=logs_bucket.id,
                target_prefix=f"{policies.ACCESS_LOGS}{kind}/",
                # <prefix><account>/<region>/<bucket>/<yyyy>/<mm>/<dd>/...: queryable by date.
                target_object_key_format=aws.s3.BucketLoggingTargetObjectKeyFormatArgs(
                    partitioned_prefix=aws.s3.BucketLoggingTargetObjectKeyFormatPartitionedPrefixArgs(
                        partition_date_source="EventTime"
                    )
                ),
                # Delivery needs the logs bucket's policy (logging service principal).
                opts=ResourceOptions.merge(
                    child_opts,
                    ResourceOptions(parent=bucket, depends_on=[self.policies["logs"]]),
                ),
            )

        self.register_outputs(
            {
                "kms_key_arn": self.key.arn,
                **{f"{kind}_bucket": b.bucket for kind, b in self.buckets.items()},
            }
        )

    @staticmethod
    def _logs_bucket_policy(
        args: StorageArgs, logs_arn: str, source_arns: list[str], account_id: str
    ) -> dict:
        doc = policies.logs_bucket_policy(logs_arn, source_arns, account_id)
        if args.logs_bucket_statements is not None:
            doc["Statement"].extend(args.logs_bucket_statements(logs_arn, account_id))
        return doc

    # Convenience accessors for wiring.
    @property
    def data_bucket(self) -> aws.s3.Bucket:
        return self.buckets["data"]

    @property
    def models_bucket(self) -> aws.s3.Bucket:
        return self.buckets["models"]

    @property
    def logs_bucket(self) -> aws.s3.Bucket:
        return self.buckets["logs"]
