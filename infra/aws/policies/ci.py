"""The CI deploy role's policy: what the pipeline needs to run the model lifecycle (not to
run `pulumi up`), built from one small statement builder per concern."""

from __future__ import annotations

from collections.abc import Sequence

from contract import layout, metrics, serving
from infra.aws.policies.arns import alarms_arn, function_arn, log_group_arn, training_jobs_arn
from infra.aws.policies.execution import SAGEMAKER_TRAINING_LOG_GROUP, register_versions
from infra.aws.policies.mlflow import use_tracking_server
from infra.aws.policies.statements import (
    ECR_PUSH_ACTIONS,
    Document,
    Statement,
    allow,
    document,
    ecr_login,
    kms_via,
    list_prefixes,
    objects,
    put_metrics,
    secret_use,
    via_services,
)

# What CI reads and writes in the models bucket (captures/ are the function's: read only).
CI_MODEL_PREFIXES = (
    layout.ARTIFACTS,
    layout.RUNS,
    layout.REPORTS,
    layout.REGISTRY,
    layout.DEPLOYMENTS,
)


def _storage(data_bucket: str, models_bucket: str) -> list[Statement]:
    model_prefixes = list(CI_MODEL_PREFIXES)
    return [
        list_prefixes("ListDatasets", data_bucket, [layout.DATASETS]),
        allow(
            "ReadWriteDatasets",
            ["s3:GetObject", "s3:PutObject"],
            objects(data_bucket, [layout.DATASETS]),
        ),
        # listing locks/ too: without s3:ListBucket, S3 answers 403 (not 404) for a free lock
        list_prefixes(
            "ListModelOutputs", models_bucket, [*model_prefixes, layout.CAPTURES, layout.LOCKS]
        ),
        allow(
            "ReadWriteModelOutputs",
            ["s3:GetObject", "s3:PutObject"],
            objects(models_bucket, model_prefixes),
        ),
        # boto3's transfer manager aborts a multipart upload that failed; artifacts are
        # the only objects large enough to be sent in parts.
        allow(
            "AbortArtifactUploads",
            "s3:AbortMultipartUpload",
            objects(models_bucket, [layout.ARTIFACTS]),
        ),
        # per-model leases (ml/clouds/aws/locks.py): taken, read back, released
        allow(
            "HoldModelLocks",
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            objects(models_bucket, [layout.LOCKS]),
        ),
        allow("ReadCapturesForDrift", "s3:GetObject", objects(models_bucket, [layout.CAPTURES])),
    ]


def _stack_key(kms_key_arn: str, region: str) -> list[Statement]:
    return [
        kms_via(
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
        kms_via(
            "UseStackKeyThroughLambda",
            kms_key_arn,
            ["kms:Decrypt", "kms:Encrypt"],
            region,
            ["lambda"],
        ),
        allow(
            "LambdaGrantsOnStackKey",
            "kms:CreateGrant",
            kms_key_arn,
            StringEquals={"kms:ViaService": via_services(region, ["lambda"])},
            Bool={"kms:GrantIsForAWSResource": "true"},
        ),
    ]


def _training_and_registry(
    training_jobs: str, sagemaker_role_arn: str, group_arns: Sequence[str]
) -> list[Statement]:
    return [
        allow(
            "RunTrainingJobs",
            [
                "sagemaker:AddTags",
                "sagemaker:CreateTrainingJob",
                "sagemaker:DescribeTrainingJob",
                "sagemaker:StopTrainingJob",
            ],
            training_jobs,
        ),
        allow(
            "PassOnlyTheSageMakerRoleToSageMaker",
            "iam:PassRole",
            sagemaker_role_arn,
            StringEquals={"iam:PassedToService": "sagemaker.amazonaws.com"},
        ),
        register_versions(
            "ManageModelVersions",
            [
                "sagemaker:CreateModelPackage",
                "sagemaker:DescribeModelPackage",
                "sagemaker:DescribeModelPackageGroup",
                "sagemaker:UpdateModelPackage",
            ],
            group_arns,
        ),
        # sagemaker:ListModelPackages supports no resource-level permissions.
        allow("ListModelVersions", "sagemaker:ListModelPackages", "*"),
    ]


def _functions(functions: Sequence[str]) -> list[Statement]:
    """Deploy to each model's function; invoke its alias (smoke) and, while a canary runs,
    its published versions (a smoke request pinned to the live or the canary version)."""
    return [
        allow(
            "DeployToTheFunctionAlias",
            [
                "lambda:GetAlias",
                "lambda:GetFunctionConfiguration",
                "lambda:ListVersionsByFunction",
                "lambda:PublishVersion",
                "lambda:UpdateAlias",
                "lambda:UpdateFunctionConfiguration",
            ],
            [arn for f in functions for arn in (f, f"{f}:*")],
        ),
        allow(
            "SmokeTestThroughTheIamFunctionUrl",
            "lambda:InvokeFunctionUrl",
            [f"{f}:{serving.LIVE_ALIAS}" for f in functions],
            StringEquals={"lambda:FunctionUrlAuthType": "AWS_IAM"},
        ),
        # Function URLs created since October 2025 also need InvokeFunction:
        # https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html
        allow("InvokeTheFunctions", "lambda:InvokeFunction", [f"{f}:*" for f in functions]),
    ]


def _monitoring(alarms: str, training_logs: str, training_streams: str) -> list[Statement]:
    return [
        allow("ReadStackAlarms", "cloudwatch:DescribeAlarms", alarms),
        # Metric reads support no resource-level permissions.
        allow("ReadMetrics", ["cloudwatch:GetMetricData", "cloudwatch:GetMetricStatistics"], "*"),
        put_metrics("PublishMetrics", [metrics.NAMESPACE]),
        allow(
            "ReadOwnTrainingJobLogs",
            ["logs:DescribeLogStreams", "logs:GetLogEvents"],
            [training_logs, training_streams],
        ),
    ]


def _mlflow(tracking_server_arn: str, models_bucket: str) -> list[Statement]:
    """The mirror's calls on the stack's tracking server; the MLflow client uploads a run's
    artifacts (the model, its card) to the server's artifact store itself, with these
    credentials: write-only under ``mlflow/``, listing there."""
    return [
        use_tracking_server("MirrorToTheStackTrackingServer", tracking_server_arn),
        list_prefixes("ListMlflowArtifacts", models_bucket, [layout.MLFLOW]),
        allow("WriteMlflowArtifacts", "s3:PutObject", objects(models_bucket, [layout.MLFLOW])),
    ]


def ci_deploy_policy(
    *,
    region: str,
    account_id: str,
    data_bucket: str,
    models_bucket: str,
    kms_key_arn: str,
    sagemaker_role_arn: str,
    model_package_group_arns: Sequence[str],
    function_names: Sequence[str],
    name_prefix: str,
    pseudonym_secret_arn: str,
    training_repository_arn: str | None = None,
    serving_repository_arn: str | None = None,
    mlflow_tracking_server_arn: str | None = None,
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
      moved, of each model's function; the smoke test through the alias (or a published
      version, pinned) and its IAM Function URL.
    - KMS, only through S3 (objects), Lambda (the function's environment, encrypted with
      the stack key) and Secrets Manager (the pseudonym key).
    - Secrets Manager: the pseudonym key secret only: described, initialised once
      (PutSecretValue with a fixed ClientRequestToken, so Pulumi never holds the value),
      read.
    - ECR: push the training and serving images to the stack's repositories.
    - CloudWatch: metrics in the Tandem namespace, the stack's alarms, its jobs' logs.
    - MLflow (with ``mlflow_tracking_server_arn``): the lifecycle's mirror calls on that one
      tracking server (`policies.mlflow`), and its artifacts written under ``mlflow/``.
    """
    if not function_names:
        raise ValueError("ci_deploy_policy: function_names is empty")
    functions = [function_arn(region, account_id, f, partition) for f in function_names]
    training_logs = log_group_arn(region, account_id, SAGEMAKER_TRAINING_LOG_GROUP, partition)
    statements: list[Statement] = [
        *_storage(data_bucket, models_bucket),
        *_stack_key(kms_key_arn, region),
        *_training_and_registry(
            training_jobs_arn(region, account_id, name_prefix, partition),
            sagemaker_role_arn,
            model_package_group_arns,
        ),
        *_functions(functions),
        *_monitoring(
            alarms_arn(region, account_id, f"{name_prefix}-*", partition),
            training_logs,
            f"{training_logs}:log-stream:{name_prefix}-*",
        ),
        *secret_use(
            "ManagePseudonymKey",
            [
                "secretsmanager:DescribeSecret",
                "secretsmanager:GetSecretValue",
                "secretsmanager:PutSecretValue",
            ],
            pseudonym_secret_arn,
            kms_key_arn,
            region,
            ["kms:Decrypt", "kms:GenerateDataKey"],
        ),
    ]
    if mlflow_tracking_server_arn:
        statements += _mlflow(mlflow_tracking_server_arn, models_bucket)
    repositories = [r for r in (training_repository_arn, serving_repository_arn) if r]
    if repositories:
        statements += [allow("PushImages", ECR_PUSH_ACTIONS, repositories), ecr_login()]
    return document(*statements)
