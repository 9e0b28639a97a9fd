"""IAM, KMS key and bucket policy documents, as plain dicts, one module per concern.

No Pulumi here: the components serialise these with `json.dumps`, and the least-privilege
tests hand the very same documents to moto (tests/integration/test_aws_least_privilege.py).

- `statements`  the document shape and statements several policies share
- `arns`        ARNs of what the policies name
- `trust`       trust policies (SageMaker, Lambda, GitHub OIDC)
- `kms`         the stack key's policy
- `buckets`     S3 bucket policies
- `execution`   the SageMaker and Lambda execution roles
- `ci`          the CI deploy role
- `mlflow`      the calls of Tandem's MLflow mirror on the stack's tracking server

Rules every document follows (security baseline, IAM rows):
- no ``"Action": "*"`` and no service-wide ``"<service>:*"``;
- ``"Resource": "*"`` only for actions that support no resource scoping (each such
  statement says so), and then with a condition where the service offers one;
- buckets are scoped to their prefixes (`contract.layout`), the KMS key to its ARN (with
  ``kms:ViaService``), the registry to the stack's model package groups, logs to the
  stack's log groups, Secrets Manager to the stack's pseudonym key secret;
- ``iam:PassRole`` only for the SageMaker execution role, only to SageMaker;
- a trust policy names exactly one principal.
"""

from infra.aws.policies.arns import (
    account_root,
    alarms_arn,
    bucket_arn,
    ecr_repository_arn,
    function_arn,
    log_group_arn,
    mlflow_tracking_server_arn,
    model_package_arns,
    model_package_group_arn,
    partition_for,
    principal_arn_of_caller,
    role_arn,
    training_jobs_arn,
)
from infra.aws.policies.buckets import (
    ACCESS_LOGS,
    access_log_delivery_statement,
    logs_bucket_policy,
    tls_only_bucket_policy,
)
from infra.aws.policies.ci import ci_deploy_policy
from infra.aws.policies.execution import (
    SAGEMAKER_TRAINING_LOG_GROUP,
    SAGEMAKER_TRAINING_NAMESPACE,
    lambda_execution_policy,
    sagemaker_execution_policy,
)
from infra.aws.policies.kms import (
    DEPLOYER_SERVICES,
    KMS_ADMIN_ACTIONS,
    KMS_USE_ACTIONS,
    kms_key_policy,
)
from infra.aws.policies.mlflow import MIRROR_ACTIONS, MIRROR_CALLS, use_tracking_server
from infra.aws.policies.statements import (
    ECR_PULL_ACTIONS,
    ECR_PUSH_ACTIONS,
    VERSION,
    Document,
    Statement,
    document,
)
from infra.aws.policies.trust import (
    GITHUB_OIDC_HOST,
    GITHUB_OIDC_URL,
    STS_AUDIENCE,
    github_oidc_trust_policy,
    lambda_trust_policy,
    sagemaker_trust_policy,
)

__all__ = [
    "ACCESS_LOGS",
    "DEPLOYER_SERVICES",
    "ECR_PULL_ACTIONS",
    "ECR_PUSH_ACTIONS",
    "GITHUB_OIDC_HOST",
    "GITHUB_OIDC_URL",
    "KMS_ADMIN_ACTIONS",
    "KMS_USE_ACTIONS",
    "MIRROR_ACTIONS",
    "MIRROR_CALLS",
    "SAGEMAKER_TRAINING_LOG_GROUP",
    "SAGEMAKER_TRAINING_NAMESPACE",
    "STS_AUDIENCE",
    "VERSION",
    "Document",
    "Statement",
    "access_log_delivery_statement",
    "account_root",
    "alarms_arn",
    "bucket_arn",
    "ci_deploy_policy",
    "document",
    "ecr_repository_arn",
    "function_arn",
    "github_oidc_trust_policy",
    "kms_key_policy",
    "lambda_execution_policy",
    "lambda_trust_policy",
    "log_group_arn",
    "logs_bucket_policy",
    "mlflow_tracking_server_arn",
    "model_package_arns",
    "model_package_group_arn",
    "partition_for",
    "principal_arn_of_caller",
    "role_arn",
    "sagemaker_execution_policy",
    "sagemaker_trust_policy",
    "tls_only_bucket_policy",
    "training_jobs_arn",
    "use_tracking_server",
]
