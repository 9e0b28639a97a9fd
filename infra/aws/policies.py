"""IAM, KMS key and bucket policy documents, as plain dicts.

No Pulumi here: the components serialise these with `json.dumps`, and the least-privilege
tests hand the very same documents to moto (tests/integration/test_aws_least_privilege.py).

Rules every document follows (security baseline, IAM rows):
- no ``"Action": "*"`` and no service-wide ``"<service>:*"``;
- ``"Resource": "*"`` only for actions that support no resource scoping (each such
  statement says so), and then with a condition where the service offers one;
- buckets are scoped to their prefixes, the KMS key to its ARN (with ``kms:ViaService``),
  the registry to the stack's model package groups, logs to the stack's log groups;
- ``iam:PassRole`` only for the SageMaker execution role, only to SageMaker;
- a trust policy names exactly one principal.

Bucket layout (what `ml/clouds/aws/` and `ml/lifecycle.py` read and write): models
bucket ``artifacts/`` (artifacts, a job's code and output), ``runs/`` (run records),
``reports/`` (evaluation reports), ``registry/`` (one record per model version),
``deployments/`` (one record per deployment), ``captures/`` (request captures), and
``mlflow/`` when the MLflow tracking server is on; data bucket ``datasets/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Document = dict[str, Any]
Statement = dict[str, Any]

VERSION = "2012-10-17"
METRIC_NAMESPACE = "Tandem"
FUNCTION_ALIAS = "live"
# SageMaker publishes a training job's own metrics (algorithm metrics, utilisation) with the
# execution role's credentials into this namespace.
# https://docs.aws.amazon.com/sagemaker/latest/dg/training-metrics.html
SAGEMAKER_TRAINING_NAMESPACE = "/aws/sagemaker/TrainingJobs"
SAGEMAKER_TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"

# Bucket prefixes (the layout the ML adapter writes to).
DATASETS = "datasets/"
ARTIFACTS = "artifacts/"
CAPTURES = "captures/"
RUNS = "runs/"
REPORTS = "reports/"
REGISTRY = "registry/"
DEPLOYMENTS = "deployments/"
MLFLOW = "mlflow/"
ACCESS_LOGS = "s3-access/"

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

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"

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


# -- ARNs ------------------------------------------------------------------------------
def partition_for(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def account_root(account_id: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account_id}:root"


def role_arn(account_id: str, name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account_id}:role/{name}"


def bucket_arn(name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:s3:::{name}"


def log_group_arn(region: str, account_id: str, name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:logs:{region}:{account_id}:log-group:{name}"


def model_package_group_arn(
    region: str, account_id: str, group: str, partition: str = "aws"
) -> str:
    return f"arn:{partition}:sagemaker:{region}:{account_id}:model-package-group/{group}"


def ecr_repository_arn(
    region: str, account_id: str, repository: str, partition: str = "aws"
) -> str:
    return f"arn:{partition}:ecr:{region}:{account_id}:repository/{repository}"


def model_package_arns(group_arn: str) -> str:
    """Versions of a group: ``model-package/<group>/<version>``."""
    return group_arn.replace(":model-package-group/", ":model-package/") + "/*"


def principal_arn_of_caller(caller_arn: str) -> list[str]:
    """The `aws:PrincipalArn` values a caller identity ARN can show up as.

    An assumed-role session (``arn:aws:sts::<acct>:assumed-role/<role>/<session>``) is
    matched by its role's ARN; the session ARN drops the role's path, hence two patterns.
    """
    parts = caller_arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role = parts[5].split("/")[1]
        base = f"arn:{parts[1]}:iam::{parts[4]}:role"
        return [f"{base}/{role}", f"{base}/*/{role}"]
    return [caller_arn]


# -- building blocks ---------------------------------------------------------------------
def document(*statements: Statement) -> Document:
    return {"Version": VERSION, "Statement": list(statements)}


def _objects(bucket: str, prefixes: Iterable[str]) -> list[str]:
    return [f"{bucket}/{prefix}*" for prefix in prefixes]


def _list_prefixes(sid: str, bucket: str, prefixes: Sequence[str]) -> Statement:
    """ListBucket on ``bucket``, only under ``prefixes`` (``s3:prefix`` condition)."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": bucket,
        "Condition": {"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
    }


def _kms_via(
    sid: str, key_arn: str, actions: Sequence[str], region: str, services: Sequence[str]
) -> Statement:
    """Use of the stack key, only through the named AWS services (never called directly)."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(actions),
        "Resource": key_arn,
        "Condition": {
            "StringEquals": {"kms:ViaService": [f"{s}.{region}.amazonaws.com" for s in services]}
        },
    }


def _ecr_login(sid: str = "EcrLogin") -> Statement:
    # ecr:GetAuthorizationToken supports no resource-level permissions: the token is for the
    # whole registry, and the repository statements decide what it may pull or push.
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerregistry.html
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": "ecr:GetAuthorizationToken",
        "Resource": "*",
    }


def _put_metrics(sid: str, namespaces: Sequence[str]) -> Statement:
    # cloudwatch:PutMetricData supports no resource-level permissions; the namespace
    # condition is what scopes it.
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": "cloudwatch:PutMetricData",
        "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": list(namespaces)}},
    }


def _service_trust(service: str) -> Document:
    return document(
        {
            "Sid": "AssumedOnlyByService",
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
        }
    )


# -- trust policies ------------------------------------------------------------------------
def sagemaker_trust_policy() -> Document:
    """Only SageMaker (training jobs, the MLflow tracking server) assumes the role."""
    return _service_trust("sagemaker.amazonaws.com")


def lambda_trust_policy() -> Document:
    """Only Lambda assumes the serving function's role."""
    return _service_trust("lambda.amazonaws.com")


def github_oidc_trust_policy(provider_arn: str, subject: str) -> Document:
    """GitHub Actions of one repository and one environment/branch, via OIDC.

    ``subject`` is the exact ``sub`` claim, e.g. ``repo:org/name:environment:production``
    or ``repo:org/name:ref:refs/heads/main`` (StringEquals: no wildcard can widen it).
    https://docs.github.com/en/actions/deployment/security-hardening-your-deployments/configuring-openid-connect-in-amazon-web-services
    """
    if any(c in subject for c in "*?"):
        raise ValueError(f"github_oidc_trust_policy: subject {subject!r} must not be a pattern")
    return document(
        {
            "Sid": "GithubActionsOneRepositoryOneRef",
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE,
                    f"{GITHUB_OIDC_HOST}:sub": subject,
                }
            },
        }
    )


# -- KMS ---------------------------------------------------------------------------------
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
      Lambda, S3, SNS and ECR, i.e. to create resources that are encrypted with it (ECR
      creates its grants when the training image repository is created, and retires them
      when it is deleted).
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
                    "StringEquals": {
                        "kms:ViaService": [
                            f"{s}.{region}.amazonaws.com" for s in ("ecr", "lambda", "s3", "sns")
                        ]
                    },
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


# -- S3 bucket policies -------------------------------------------------------------------
def tls_only_bucket_policy(bucket: str, *extra: Statement) -> Document:
    """Deny every request that is not TLS (FSBP S3.5), or is TLS older than 1.2."""
    resources = [bucket, f"{bucket}/*"]
    return document(
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        {
            "Sid": "DenyOutdatedTls",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
        },
        *extra,
    )


def access_log_delivery_statement(
    logs_bucket: str, source_buckets: Sequence[str], account_id: str, prefix: str = ACCESS_LOGS
) -> Statement:
    """S3 server access log delivery into ``logs_bucket``, only from our own buckets.

    With BucketOwnerEnforced, ACL grants to the log delivery group are impossible; the
    logging service principal is allowed by bucket policy instead.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/enable-server-access-logging.html
    """
    return {
        "Sid": "S3ServerAccessLogDelivery",
        "Effect": "Allow",
        "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": "s3:PutObject",
        "Resource": f"{logs_bucket}/{prefix}*",
        "Condition": {
            "ArnLike": {"aws:SourceArn": list(source_buckets)},
            "StringEquals": {"aws:SourceAccount": account_id},
        },
    }


def logs_bucket_policy(
    logs_bucket: str, source_buckets: Sequence[str], account_id: str, prefix: str = ACCESS_LOGS
) -> Document:
    return tls_only_bucket_policy(
        logs_bucket, access_log_delivery_statement(logs_bucket, source_buckets, account_id, prefix)
    )


# -- role policies -----------------------------------------------------------------------
def sagemaker_execution_policy(
    *,
    region: str,
    account_id: str,
    data_bucket: str,
    models_bucket: str,
    kms_key_arn: str,
    model_package_group_arns: Sequence[str],
    training_job_prefix: str,
    ecr_repository_arns: Sequence[str] = (),
    mlflow: bool = False,
    partition: str = "aws",
) -> Document:
    """What a training job (and the MLflow server) needs, and nothing else.

    Reads ``datasets/`` in the data bucket; reads and writes ``artifacts/`` and ``runs/``
    (and ``mlflow/`` with MLflow) in the models bucket; registers versions into the
    stack's model package groups; writes its job's logs and metrics; pulls the training
    image from ``ecr_repository_arns`` (the repository of the image jobs run).
    """
    if not model_package_group_arns:
        raise ValueError("sagemaker_execution_policy: model_package_group_arns is empty")
    model_prefixes = [ARTIFACTS, RUNS, *([MLFLOW] if mlflow else [])]
    training_logs = log_group_arn(region, account_id, SAGEMAKER_TRAINING_LOG_GROUP, partition)
    statements: list[Statement] = [
        _list_prefixes("ListDatasets", data_bucket, [DATASETS]),
        {
            "Sid": "ReadDatasets",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": _objects(data_bucket, [DATASETS]),
        },
        _list_prefixes("ListModelOutputs", models_bucket, model_prefixes),
        {
            "Sid": "ReadWriteModelOutputs",
            "Effect": "Allow",
            "Action": [
                "s3:AbortMultipartUpload",
                "s3:GetObject",
                "s3:ListMultipartUploadParts",
                "s3:PutObject",
            ],
            "Resource": _objects(models_bucket, model_prefixes),
        },
        _kms_via(
            "UseStackKeyThroughS3",
            kms_key_arn,
            ["kms:Decrypt", "kms:GenerateDataKey"],
            region,
            ["s3"],
        ),
        {
            # The training instance's volume is encrypted with the stack key (VolumeKmsKeyId):
            # SageMaker has EBS create a grant with this role's rights. Only grants for AWS
            # resources; the key policy allows the same for the stack roles.
            "Sid": "GrantTrainingVolumeEncryption",
            "Effect": "Allow",
            "Action": "kms:CreateGrant",
            "Resource": kms_key_arn,
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
        },
        {
            "Sid": "RegisterModelVersions",
            "Effect": "Allow",
            "Action": [
                "sagemaker:CreateModelPackage",
                "sagemaker:DescribeModelPackage",
                "sagemaker:DescribeModelPackageGroup",
            ],
            "Resource": [
                *model_package_group_arns,
                *(model_package_arns(g) for g in model_package_group_arns),
            ],
        },
        _put_metrics("PublishMetrics", [METRIC_NAMESPACE, SAGEMAKER_TRAINING_NAMESPACE]),
        {
            "Sid": "CreateTrainingLogGroup",
            "Effect": "Allow",
            "Action": "logs:CreateLogGroup",
            "Resource": training_logs,
        },
        {
            # Stream creation is authorized on the group ("log-group:<name>:*").
            "Sid": "CreateTrainingLogStreams",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams"],
            "Resource": f"{training_logs}:*",
        },
        {
            # Streams are named "<training job name>/algo-<n>-<timestamp>": events go only
            # to the streams of this stack's jobs, in the group all SageMaker jobs share.
            "Sid": "WriteOwnTrainingJobLogs",
            "Effect": "Allow",
            "Action": "logs:PutLogEvents",
            "Resource": f"{training_logs}:log-stream:{training_job_prefix}-*",
        },
    ]
    if ecr_repository_arns:
        # SageMaker pulls a custom training image with the execution role's credentials.
        # https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html
        statements += [
            {
                "Sid": "PullTrainingImage",
                "Effect": "Allow",
                "Action": list(ECR_PULL_ACTIONS),
                "Resource": list(ecr_repository_arns),
            },
            _ecr_login(),
        ]
    return document(*statements)


def lambda_execution_policy(
    *,
    region: str,
    models_bucket: str,
    kms_key_arn: str,
    log_group: str,
    tracing: bool = True,
) -> Document:
    """The serving function: read ``artifacts/``, write ``captures/``, its logs, metrics.

    ``log_group`` is the ARN of the function's own log group (created by the serving
    component, so no ``logs:CreateLogGroup`` here).
    """
    statements: list[Statement] = [
        {
            "Sid": "ReadModelArtifacts",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": _objects(models_bucket, [ARTIFACTS]),
        },
        {
            "Sid": "WriteRequestCaptures",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": _objects(models_bucket, [CAPTURES]),
        },
        _kms_via(
            "UseStackKeyThroughS3AndLambda",
            kms_key_arn,
            ["kms:Decrypt", "kms:GenerateDataKey"],
            region,
            ["s3", "lambda"],
        ),
        {
            # "<group arn>:*" is the form AWS documents for a function's own log group: it
            # covers the group (CreateLogStream) and its streams (PutLogEvents).
            # https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-permissions.html
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"{log_group}:*",
        },
        _put_metrics("PublishMetrics", [METRIC_NAMESPACE]),
    ]
    if tracing:
        statements.append(
            {
                # X-Ray segment upload supports no resource-level permissions.
                # https://docs.aws.amazon.com/xray/latest/devguide/security_iam_service-with-iam.html
                "Sid": "XRayActiveTracing",
                "Effect": "Allow",
                "Action": ["xray:PutTelemetryRecords", "xray:PutTraceSegments"],
                "Resource": "*",
            }
        )
    return document(*statements)


def ci_deploy_policy(
    *,
    region: str,
    account_id: str,
    data_bucket: str,
    models_bucket: str,
    kms_key_arn: str,
    sagemaker_role_arn: str,
    model_package_group_arns: Sequence[str],
    function_name: str,
    name_prefix: str,
    training_repository_arn: str | None = None,
    partition: str = "aws",
) -> Document:
    """What the CI pipeline needs to run the model lifecycle (not to run `pulumi up`).

    Every call `ml/clouds/aws/` makes for train -> register -> approve -> deploy ->
    rollback, on this stack's resources only (tests/integration/test_aws_ci_role.py records
    the calls and checks each one against this document):

    - S3: datasets in, artifacts (and a job's code) in and out, run records, reports,
      version records (``registry/``) and deployment records (``deployments/``) read and
      written; captures read for drift. Listing is allowed on the same prefixes: S3
      answers a read of a missing key with 404 only to a caller that may list it (with
      ``s3:prefix`` set to the key), and the adapter treats 404 as "not there yet" (a new
      artifact's manifest, a staged dataset, a version without a record).
    - SageMaker: training jobs named ``<prefix>-*`` with the SageMaker role; versions of
      the stack's model package groups.
    - Lambda: a new configuration (``MODEL_URI``), a published version, the ``live`` alias
      moved, of the stack's function; the smoke test through its IAM Function URL.
    - KMS, only through S3 (objects) and Lambda (the function's environment, encrypted with
      the stack key).
    - ECR: push the training image to the stack's repository (``training_repository_arn``).
    - CloudWatch: metrics in the Tandem namespace, the stack's alarms, its jobs' logs.
    """
    function_arn = f"arn:{partition}:lambda:{region}:{account_id}:function:{function_name}"
    training_jobs = f"arn:{partition}:sagemaker:{region}:{account_id}:training-job/{name_prefix}-*"
    training_logs = log_group_arn(region, account_id, SAGEMAKER_TRAINING_LOG_GROUP, partition)
    model_prefixes = [ARTIFACTS, RUNS, REPORTS, REGISTRY, DEPLOYMENTS]
    statements: list[Statement] = [
        _list_prefixes("ListDatasets", data_bucket, [DATASETS]),
        {
            "Sid": "ReadWriteDatasets",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": _objects(data_bucket, [DATASETS]),
        },
        _list_prefixes("ListModelOutputs", models_bucket, [*model_prefixes, CAPTURES]),
        {
            "Sid": "ReadWriteModelOutputs",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": _objects(models_bucket, model_prefixes),
        },
        {
            # boto3's transfer manager aborts a multipart upload that failed; artifacts are
            # the only objects large enough to be sent in parts.
            "Sid": "AbortArtifactUploads",
            "Effect": "Allow",
            "Action": "s3:AbortMultipartUpload",
            "Resource": _objects(models_bucket, [ARTIFACTS]),
        },
        {
            "Sid": "ReadCapturesForDrift",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": _objects(models_bucket, [CAPTURES]),
        },
        _kms_via(
            "UseStackKeyThroughS3",
            kms_key_arn,
            ["kms:Decrypt", "kms:GenerateDataKey"],
            region,
            ["s3"],
        ),
        # The function's environment is encrypted with the stack key: Lambda encrypts a new
        # environment and creates its grant with the caller's permissions, and returns the
        # current one in clear only to a caller that may decrypt it.
        # https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars-encryption.html
        _kms_via(
            "UseStackKeyThroughLambda",
            kms_key_arn,
            ["kms:Decrypt", "kms:Encrypt"],
            region,
            ["lambda"],
        ),
        {
            "Sid": "LambdaGrantsOnStackKey",
            "Effect": "Allow",
            "Action": "kms:CreateGrant",
            "Resource": kms_key_arn,
            "Condition": {
                "StringEquals": {"kms:ViaService": [f"lambda.{region}.amazonaws.com"]},
                "Bool": {"kms:GrantIsForAWSResource": "true"},
            },
        },
        {
            "Sid": "RunTrainingJobs",
            "Effect": "Allow",
            "Action": [
                "sagemaker:AddTags",
                "sagemaker:CreateTrainingJob",
                "sagemaker:DescribeTrainingJob",
                "sagemaker:StopTrainingJob",
            ],
            "Resource": training_jobs,
        },
        {
            "Sid": "PassOnlyTheSageMakerRoleToSageMaker",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": sagemaker_role_arn,
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        },
        {
            "Sid": "ManageModelVersions",
            "Effect": "Allow",
            "Action": [
                "sagemaker:CreateModelPackage",
                "sagemaker:DescribeModelPackage",
                "sagemaker:DescribeModelPackageGroup",
                "sagemaker:UpdateModelPackage",
            ],
            "Resource": [
                *model_package_group_arns,
                *(model_package_arns(g) for g in model_package_group_arns),
            ],
        },
        {
            # sagemaker:ListModelPackages supports no resource-level permissions.
            "Sid": "ListModelVersions",
            "Effect": "Allow",
            "Action": "sagemaker:ListModelPackages",
            "Resource": "*",
        },
        {
            "Sid": "DeployToTheFunctionAlias",
            "Effect": "Allow",
            "Action": [
                "lambda:GetAlias",
                "lambda:GetFunctionConfiguration",
                "lambda:ListVersionsByFunction",
                "lambda:PublishVersion",
                "lambda:UpdateAlias",
                "lambda:UpdateFunctionConfiguration",
            ],
            "Resource": [function_arn, f"{function_arn}:*"],
        },
        {
            "Sid": "SmokeTestThroughTheIamFunctionUrl",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunctionUrl",
            "Resource": f"{function_arn}:{FUNCTION_ALIAS}",
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}},
        },
        {
            # Function URLs created since October 2025 also need InvokeFunction:
            # https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html
            "Sid": "InvokeTheLiveAlias",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": f"{function_arn}:{FUNCTION_ALIAS}",
        },
        {
            "Sid": "ReadStackAlarms",
            "Effect": "Allow",
            "Action": "cloudwatch:DescribeAlarms",
            "Resource": f"arn:{partition}:cloudwatch:{region}:{account_id}:alarm:{name_prefix}-*",
        },
        {
            # Metric reads support no resource-level permissions.
            "Sid": "ReadMetrics",
            "Effect": "Allow",
            "Action": ["cloudwatch:GetMetricData", "cloudwatch:GetMetricStatistics"],
            "Resource": "*",
        },
        _put_metrics("PublishMetrics", [METRIC_NAMESPACE]),
        {
            "Sid": "ReadOwnTrainingJobLogs",
            "Effect": "Allow",
            "Action": ["logs:DescribeLogStreams", "logs:GetLogEvents"],
            "Resource": [training_logs, f"{training_logs}:log-stream:{name_prefix}-*"],
        },
    ]
    if training_repository_arn:
        statements += [
            {
                "Sid": "PushTrainingImage",
                "Effect": "Allow",
                "Action": list(ECR_PUSH_ACTIONS),
                "Resource": training_repository_arn,
            },
            _ecr_login(),
        ]
    return document(*statements)
