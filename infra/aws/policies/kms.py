"""The stack key's policy: administration by IAM, use by the stack's roles, and the AWS
services that encrypt with it (CloudWatch Logs, CloudTrail, alarms to the SNS topic)."""

from __future__ import annotations

from collections.abc import Sequence

from infra.aws.policies.arns import account_root, log_group_arn
from infra.aws.policies.statements import Document, Statement, document, via_services

# Key administration without use: create/describe/enable/disable/rotate/schedule deletion,
# never Encrypt/Decrypt/GenerateDataKey. (Listed, not "kms:*".)
KMS_ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)
KMS_USE_ACTIONS = (
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:Encrypt",
    "kms:GenerateDataKey*",
    "kms:ReEncrypt*",
)
# What the deployer may create encrypted with the key, through these services only.
DEPLOYER_SERVICES = ("ecr", "lambda", "s3", "sns", "secretsmanager")


def kms_key_policy(
    account_id: str,
    region: str,
    user_role_arns: Sequence[str],
    *,
    admin_principal_arns: Sequence[str] | None = None,
    deployer_principal_arns: Sequence[str] = (),
    partition: str = "aws",
    log_group_patterns: Sequence[str] = ("*",),
    allow_cloudtrail: bool = True,
    allow_cloudwatch_alarms: bool = True,
) -> Document:
    """The stack key's policy: administration, use by named roles, and named services.

    - Administration (never use) is delegated to IAM in this account (``:root``), so that
      the deployer can always manage the key and no principal is ever locked out.
    - Use (Encrypt/Decrypt/GenerateDataKey) only by ``user_role_arns`` (the stack's roles),
      matched with ``aws:PrincipalArn``: the roles need not exist yet when the key is
      created, and a role outside the list gets nothing even with ``kms:*`` in IAM.
    - ``deployer_principal_arns`` (whoever runs ``pulumi up``) may use the key only through
      Lambda, S3, SNS, ECR and Secrets Manager, i.e. to create resources that are encrypted
      with it (ECR creates its grants when the training image repository is created, and
      retires them when it is deleted), and, on a stack without a CI role, to initialise the
      pseudonym key secret the way CI would (`infra.aws.secrets`).
    - The stack roles' use covers Secrets Manager too: the Lambda role reads the pseudonym
      key and the CI role initialises it; their own policies allow that only through
      ``secretsmanager.<region>.amazonaws.com`` and only on that secret.
    - CloudWatch Logs, CloudTrail and CloudWatch alarms (publishing to the encrypted SNS
      topic) get what their docs require, each with the narrowest condition they document;
      CloudWatch Logs only for log groups named by ``log_group_patterns``.
    """
    root = account_root(account_id, partition)
    admins = list(admin_principal_arns) if admin_principal_arns else [root]
    if not user_role_arns:
        raise ValueError("kms_key_policy: user_role_arns must name at least one role")
    statements: list[Statement] = [
        {
            "Sid": "KeyAdministration",
            "Effect": "Allow",
            "Principal": {"AWS": admins},
            "Action": list(KMS_ADMIN_ACTIONS),
            # In a key policy, "*" means "this key".
            "Resource": "*",
        },
        {
            "Sid": "KeyUseByStackRoles",
            "Effect": "Allow",
            "Principal": {"AWS": root},
            "Action": list(KMS_USE_ACTIONS),
            "Resource": "*",
            "Condition": {"ArnEquals": {"aws:PrincipalArn": list(user_role_arns)}},
        },
        {
            # Lambda (environment variables) and SageMaker (training volumes) use grants.
            "Sid": "GrantsForAwsResourcesByStackRoles",
            "Effect": "Allow",
            "Principal": {"AWS": root},
            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            "Resource": "*",
            "Condition": {
                "ArnEquals": {"aws:PrincipalArn": list(user_role_arns)},
                "Bool": {"kms:GrantIsForAWSResource": "true"},
            },
        },
    ]
    if deployer_principal_arns:
        statements.append(
            {
                "Sid": "DeployerCreatesEncryptedResources",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": [
                    "kms:CreateGrant",
                    "kms:Decrypt",
                    "kms:DescribeKey",
                    "kms:Encrypt",
                    "kms:GenerateDataKey*",
                    "kms:RetireGrant",
                ],
                "Resource": "*",
                "Condition": {
                    "ArnLike": {"aws:PrincipalArn": list(deployer_principal_arns)},
                    "StringEquals": {"kms:ViaService": via_services(region, DEPLOYER_SERVICES)},
                },
            }
        )
    # https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html
    statements.append(
        {
            "Sid": "CloudWatchLogsForThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": f"logs.{region}.amazonaws.com"},
            "Action": [
                "kms:Decrypt*",
                "kms:Describe*",
                "kms:Encrypt*",
                "kms:GenerateDataKey*",
                "kms:ReEncrypt*",
            ],
            "Resource": "*",
            "Condition": {
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": [
                        log_group_arn(region, account_id, p, partition) for p in log_group_patterns
                    ]
                }
            },
        }
    )
    if allow_cloudtrail:
        # https://docs.aws.amazon.com/awscloudtrail/latest/userguide/create-kms-key-policy-for-cloudtrail.html
        trail_arns = f"arn:{partition}:cloudtrail:*:{account_id}:trail/*"
        statements.append(
            {
                "Sid": "CloudTrailEncryptsThisAccountsTrails",
                "Effect": "Allow",
                "Principal": {"Service": "cloudtrail.amazonaws.com"},
                "Action": "kms:GenerateDataKey*",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "StringLike": {"kms:EncryptionContext:aws:cloudtrail:arn": trail_arns},
                },
            }
        )
        statements.append(
            {
                "Sid": "CloudTrailDescribesKey",
                "Effect": "Allow",
                "Principal": {"Service": "cloudtrail.amazonaws.com"},
                "Action": "kms:DescribeKey",
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            }
        )
    if allow_cloudwatch_alarms:
        # Alarms publishing to an SNS topic encrypted with this key. AWS documents this
        # statement without a condition key (CloudWatch sends none to KMS on this path);
        # the topic's own policy limits which alarms may publish.
        # https://repost.aws/knowledge-center/cloudwatch-configure-alarm-sns
        statements.append(
            {
                "Sid": "CloudWatchAlarmsPublishToEncryptedTopic",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
            }
        )
    return document(*statements)
