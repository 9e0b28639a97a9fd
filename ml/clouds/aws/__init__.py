"""The AWS stack: S3, SageMaker Model Registry, CloudWatch, SageMaker training jobs, Lambda.

Built from the stack outputs alone (`contract.outputs.AWS`, exported by infra/aws/); an
optional `endpoint_url` sends every client to one endpoint (moto, LocalStack). The store's
layout is `contract.layout`: the data bucket holds `datasets/`, the models bucket the rest.

Decisions a reader should know:

- Integrity. Every upload carries `ChecksumAlgorithm=SHA256`, so S3 checks each byte it
  receives and stores the digest; a stored copy is verified against the local file without
  a download (for a multipart object, the checksum of the part checksums). The transfer is
  the one every store shares (`ml/clouds/verified.py`): MANIFEST.json last, conditionally.
- Registry. SageMaker assigns version numbers and holds the approval status. `archived` is
  not a SageMaker status: an archived version is `Rejected` in SageMaker (nothing SageMaker-
  native deploys it) with `CustomerMetadataProperties["tandem:status"] = "archived"` and the
  reason in `ApprovalDescription`. The side record `registry/<model>/v<n>.json` holds what
  Tandem needs in full; on a status change it is written before SageMaker is updated.
- Serving. Each model has its own function (`endpoints`). A deploy sets `MODEL_URI`,
  `MODEL_NAME` and `MODEL_VERSION` on the model's function, publishes a version described
  `<model>:v<version>`, and moves its `live` alias. A canary keeps the live version as the
  alias's primary and routes `canary_weight` of the traffic to the new one. Re-deploying a
  model version published before (a rollback) re-points the alias to that Lambda version:
  the exact code and configuration that served it. What is live is read from the alias.
- Registry. A model package names the serving image (`serving_image_uri`), so SageMaker
  hosting can serve it.
- Locks are leases in S3 (`locks/`), taken and released with conditional writes.
- Errors. Every public method raises Tandem's errors (`translate_errors`), never botocore's.
- MLflow. `mlflow_tracking_server_arn`, when exported, is the Stack's `tracking_uri` (the
  lifecycle's mirror uses it unless MLFLOW_TRACKING_URI is set) and the MLFLOW_TRACKING_URI
  of a training job with network; a network-isolated job (Tandem's image) is not told.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ml.clouds.aws.common import AwsOutputs, Clients, FunctionEndpoint, parse_s3_uri
from ml.clouds.aws.endpoint import LambdaEndpoint
from ml.clouds.aws.jobs import SageMakerJobRunner, job_name
from ml.clouds.aws.locks import S3Locks
from ml.clouds.aws.metrics import CloudWatchMetricsSink
from ml.clouds.aws.registry import SageMakerModelRegistry
from ml.clouds.aws.secrets import pseudonym_key
from ml.clouds.aws.store import S3ArtifactStore, composite_sha256, part_size
from ml.clouds.base import Stack

__all__ = [
    "AwsOutputs",
    "Clients",
    "CloudWatchMetricsSink",
    "FunctionEndpoint",
    "LambdaEndpoint",
    "S3ArtifactStore",
    "S3Locks",
    "SageMakerJobRunner",
    "SageMakerModelRegistry",
    "composite_sha256",
    "connect",
    "job_name",
    "parse_s3_uri",
    "part_size",
]


def connect(outputs: Mapping[str, Any]) -> Stack:
    """The AWS Stack of one environment, from its stack outputs alone."""
    cfg = AwsOutputs.parse(outputs)
    clients = Clients(cfg.region, cfg.endpoint_url)
    store = S3ArtifactStore(
        clients("s3"),
        models_bucket=cfg.models_bucket,
        data_bucket=cfg.data_bucket,
        kms_key_arn=cfg.kms_key_arn,
    )
    return Stack(
        cloud="aws",
        name=cfg.stack,
        store=store,
        registry=SageMakerModelRegistry(
            clients("sagemaker"), store, cfg.model_package_groups, image_uri=cfg.serving_image_uri
        ),
        metrics=CloudWatchMetricsSink(clients("cloudwatch"), cfg.metric_namespace),
        jobs=SageMakerJobRunner(clients("sagemaker"), store, cfg),
        endpoint=LambdaEndpoint(clients("lambda"), store, cfg.endpoints, stack=cfg.stack),
        locks=S3Locks(store),
        outputs=dict(outputs),
        tracking_uri=cfg.mlflow_tracking_server_arn,
        pseudonym_key=pseudonym_key(clients("secretsmanager"), cfg.pseudonym_secret_arn),
    )
