"""The AWS stack: S3, SageMaker Model Registry, CloudWatch, SageMaker training jobs, Lambda.

Built from the stack outputs alone (`infra/aws/__init__.py`, `AwsPlatform.outputs`); an
optional `endpoint_url` output sends every client to one endpoint (moto, LocalStack).

Where things live:

    s3://<models_bucket>/artifacts/<model>/<run>/           an artifact (MANIFEST.json last)
    s3://<models_bucket>/artifacts/<model>/<run>/code/      the training job's sourcedir.tar.gz
    s3://<models_bucket>/artifacts/<model>/<run>/output/    what the training job wrote
    s3://<models_bucket>/runs/, reports/, captures/         run records, reports, captures
    s3://<models_bucket>/registry/<model>/v<version>.json   one record per registered version
    s3://<models_bucket>/deployments/<model>/<time>-*.json  one record per deployment
    s3://<data_bucket>/datasets/<model>/<sha256>.parquet    staged training data

Decisions a reader should know:

- Integrity. Every upload carries `ChecksumAlgorithm=SHA256`, so S3 checks each byte it
  receives and stores the digest. `put_artifact` then verifies the stored copy without
  downloading it: `head_object` size and `ChecksumSHA256` against the local file (for a
  multipart object, the checksum of the part checksums, computed locally with the same part
  size). An object with no stored checksum is read back and hashed instead. The data files
  are verified before MANIFEST.json is written (conditionally, `If-None-Match: *`), so a key
  that has a manifest always held a verified artifact.
- Registry. SageMaker assigns version numbers and holds the approval status. `archived` is
  not a SageMaker status: an archived version is `Rejected` in SageMaker (nothing SageMaker-
  native deploys it) with `CustomerMetadataProperties["tandem:status"] = "archived"` and the
  reason in `ApprovalDescription`. The per-version S3 record holds what Tandem needs in full
  (metrics, tags, status, reason). On a status change it is written before SageMaker is
  updated, so a change interrupted halfway reads as the old status and can be retried.
- Serving. A deploy sets `MODEL_URI` (the artifact URI), `MODEL_NAME` and `MODEL_VERSION` on
  the function, publishes a version described `<model>:v<version>`, and moves the `live`
  alias. A canary keeps the live version as the alias's primary and routes `canary_weight`
  of the traffic to the new one (`RoutingConfig.AdditionalVersionWeights`). Re-deploying a
  model version that was published before (a rollback) re-points the alias to that Lambda
  version: the exact code and configuration that served it, nothing republished.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ml.clouds.aws.common import REQUIRED_OUTPUTS, AwsOutputs, Clients, parse_s3_uri
from ml.clouds.aws.endpoint import LambdaEndpoint
from ml.clouds.aws.jobs import (
    SageMakerJobRunner,
    job_name,
    runtime_requirements,
    source_files,
    sourcedir_tarball,
)
from ml.clouds.aws.metrics import CloudWatchMetricsSink
from ml.clouds.aws.registry import SageMakerModelRegistry
from ml.clouds.aws.store import S3ArtifactStore, composite_sha256, part_size, verify_tarball
from ml.clouds.base import Stack

__all__ = [
    "REQUIRED_OUTPUTS",
    "AwsOutputs",
    "Clients",
    "CloudWatchMetricsSink",
    "LambdaEndpoint",
    "S3ArtifactStore",
    "SageMakerJobRunner",
    "SageMakerModelRegistry",
    "composite_sha256",
    "connect",
    "job_name",
    "parse_s3_uri",
    "part_size",
    "runtime_requirements",
    "source_files",
    "sourcedir_tarball",
    "verify_tarball",
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
            clients("sagemaker"), store, cfg.model_package_groups, image_uri=cfg.training_image_uri
        ),
        metrics=CloudWatchMetricsSink(clients("cloudwatch"), cfg.metric_namespace),
        jobs=SageMakerJobRunner(clients("sagemaker"), store, cfg),
        endpoint=LambdaEndpoint(
            clients("lambda"),
            store,
            function_name=cfg.function_name,
            alias=cfg.function_alias,
            url=cfg.function_url,
        ),
        outputs=dict(outputs),
    )
