"""The execution roles' policies: what a SageMaker training job and the serving Lambda
may do, and nothing else."""

from __future__ import annotations

from collections.abc import Sequence

from contract import layout, metrics
from infra.aws.policies.arns import log_group_arn, model_package_arns
from infra.aws.policies.mlflow import use_tracking_server
from infra.aws.policies.statements import (
    ECR_PULL_ACTIONS,
    Document,
    Statement,
    allow,
    document,
    ecr_login,
    kms_via,
    list_prefixes,
    objects,
    put_metrics,
)

# SageMaker publishes a training job's own metrics (algorithm metrics, utilisation) with the
# execution role's credentials into this namespace, and its logs into this group.
# https://docs.aws.amazon.com/sagemaker/latest/dg/training-metrics.html
SAGEMAKER_TRAINING_NAMESPACE = "/aws/sagemaker/TrainingJobs"
SAGEMAKER_TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def register_versions(sid: str, actions: Sequence[str], group_arns: Sequence[str]) -> Statement:
    """``actions`` on the stack's model package groups and their versions."""
    return allow(sid, actions, [*group_arns, *(model_package_arns(g) for g in group_arns)])


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
    mlflow_tracking_server_arn: str | None = None,
    partition: str = "aws",
) -> Document:
    """What a training job (and the MLflow server) needs, and nothing else.

    Reads ``datasets/`` in the data bucket; reads and writes ``artifacts/`` and ``runs/``
    (and ``mlflow/`` with MLflow) in the models bucket; registers versions into the
    stack's model package groups; writes its job's logs and metrics; pulls the training
    image from ``ecr_repository_arns`` (the repository of the image jobs run). With
    ``mlflow_tracking_server_arn``, a job that has network (a stock image) logs its run to
    that one tracking server (`policies.mlflow`).
    """
    if not model_package_group_arns:
        raise ValueError("sagemaker_execution_policy: model_package_group_arns is empty")
    model_prefixes = [layout.ARTIFACTS, layout.RUNS, *([layout.MLFLOW] if mlflow else [])]
    training_logs = log_group_arn(region, account_id, SAGEMAKER_TRAINING_LOG_GROUP, partition)
    statements: list[Statement] = [
        list_prefixes("ListDatasets", data_bucket, [layout.DATASETS]),
        allow(
            "ReadDatasets",
            ["s3:GetObject", "s3:GetObjectVersion"],
            objects(data_bucket, [layout.DATASETS]),
        ),
        list_prefixes("ListModelOutputs", models_bucket, model_prefixes),
        allow(
            "ReadWriteModelOutputs",
            [
                "s3:AbortMultipartUpload",
                "s3:GetObject",
                "s3:ListMultipartUploadParts",
                "s3:PutObject",
            ],
            objects(models_bucket, model_prefixes),
        ),
        kms_via(
            "UseStackKeyThroughS3",
            kms_key_arn,
            ["kms:Decrypt", "kms:GenerateDataKey"],
            region,
            ["s3"],
        ),
        # The training instance's volume is encrypted with the stack key (VolumeKmsKeyId):
        # SageMaker has EBS create a grant with this role's rights. Only grants for AWS
        # resources; the key policy allows the same for the stack roles.
        allow(
            "GrantTrainingVolumeEncryption",
            "kms:CreateGrant",
            kms_key_arn,
            Bool={"kms:GrantIsForAWSResource": "true"},
        ),
        register_versions(
            "RegisterModelVersions",
            [
                "sagemaker:CreateModelPackage",
                "sagemaker:DescribeModelPackage",
                "sagemaker:DescribeModelPackageGroup",
            ],
            model_package_group_arns,
        ),
        put_metrics("PublishMetrics", [metrics.NAMESPACE, SAGEMAKER_TRAINING_NAMESPACE]),
        allow("CreateTrainingLogGroup", "logs:CreateLogGroup", training_logs),
        # Stream creation is authorized on the group ("log-group:<name>:*").
        allow(
            "CreateTrainingLogStreams",
            ["logs:CreateLogStream", "logs:DescribeLogStreams"],
            f"{training_logs}:*",
        ),
        # Streams are named "<training job name>/algo-<n>-<timestamp>": events go only
        # to the streams of this stack's jobs, in the group all SageMaker jobs share.
        allow(
            "WriteOwnTrainingJobLogs",
            "logs:PutLogEvents",
            f"{training_logs}:log-stream:{training_job_prefix}-*",
        ),
    ]
    if mlflow_tracking_server_arn:
        statements.append(
            use_tracking_server("LogToTheStackTrackingServer", mlflow_tracking_server_arn)
        )
    if ecr_repository_arns:
        # SageMaker pulls a custom training image with the execution role's credentials.
        # https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html
        statements += [
            allow("PullImages", ECR_PULL_ACTIONS, list(ecr_repository_arns)),
            ecr_login(),
        ]
    return document(*statements)


def lambda_execution_policy(
    *,
    region: str,
    model: str,
    models_bucket: str,
    kms_key_arn: str,
    log_group: str,
    tracing: bool = True,
) -> Document:
    """One model's serving function: read that model's artifacts (``artifacts/<model>/``),
    write its captures (``captures/<model>/``), its own logs, and nothing else.

    No other model's objects: each model has its own function and role, so a bug or a
    compromise in one endpoint cannot read or overwrite another model. No Secrets Manager
    (captures drop personal columns: no pseudonym key reaches the function) and no
    ``cloudwatch:PutMetricData`` (the handler's metrics are Embedded Metric Format log
    lines). ``log_group`` is the ARN of the function's own log group (created by the serving
    component, so no ``logs:CreateLogGroup`` here).
    """
    artifacts = f"{layout.ARTIFACTS}{model}/"
    captures = layout.captures_prefix(model)
    statements: list[Statement] = [
        allow("ReadOwnModelArtifacts", "s3:GetObject", objects(models_bucket, [artifacts])),
        allow("WriteOwnRequestCaptures", "s3:PutObject", objects(models_bucket, [captures])),
        # S3 (objects under the bucket key) and Lambda (the environment) decrypt with the key.
        kms_via(
            "UseStackKeyThroughS3AndLambda",
            kms_key_arn,
            ["kms:Decrypt", "kms:GenerateDataKey"],
            region,
            ["s3", "lambda"],
        ),
        # "<group arn>:*" is the form AWS documents for a function's own log group: it
        # covers the group (CreateLogStream) and its streams (PutLogEvents).
        # https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-permissions.html
        allow("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], f"{log_group}:*"),
    ]
    if tracing:
        # X-Ray segment upload supports no resource-level permissions.
        # https://docs.aws.amazon.com/xray/latest/devguide/security_iam_service-with-iam.html
        statements.append(
            allow("XRayActiveTracing", ["xray:PutTelemetryRecords", "xray:PutTraceSegments"], "*")
        )
    return document(*statements)
