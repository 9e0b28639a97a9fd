"""The model registry: one SageMaker model package group per model, and optionally a
SageMaker managed MLflow tracking server for experiment tracking.

Versions, approval states and lineage live in the model package groups; the ML adapter
(`ml/clouds/aws/`) registers model packages into them. No KMS key is taken here: neither
model package groups nor the MLflow tracking server accept one (their APIs have no key
parameter); what they point at lives in the artifact bucket, encrypted by its default key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from infra.aws._checks import check_arn
from infra.aws.names import AwsNames
from infra.common.checks import check_models, check_name_prefix

# ModelPackageGroupName pattern and length:
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackageGroup.html
_GROUP_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# TrackingServerSize values:
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateMlflowTrackingServer.html
_MLFLOW_SIZES = ("Small", "Medium", "Large")


@dataclass
class RegistryArgs:
    """Inputs of the model registry.

    name_prefix: stack-wide prefix, e.g. ``tandem-dev``; groups are ``<prefix>-<model>``.
    models: model names (lowercase letters, digits, hyphens), at least one, no duplicates.
    tags: applied to every resource.
    mlflow: also create a SageMaker managed MLflow tracking server. Off by default: it is
        billed by the hour while it exists.
    sagemaker_role_arn: role the tracking server assumes to read/write its artifact store
        (needs S3 access to ``s3://<artifact_bucket_name>/mlflow/*`` and use of the bucket's
        KMS key). Required when ``mlflow`` is on.
    artifact_bucket_name: bucket holding MLflow artifacts under the ``mlflow/`` prefix.
        Required when ``mlflow`` is on.
    mlflow_size: tracking server size: Small, Medium or Large.
    """

    name_prefix: str
    models: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    mlflow: bool = False
    sagemaker_role_arn: Input[str] | None = None
    artifact_bucket_name: Input[str] | None = None
    mlflow_size: str = "Small"

    def validate(self) -> None:
        check_name_prefix("Registry", self.name_prefix)
        check_models("Registry", self.models)
        for model in self.models:
            # The naming rules keep it inside SageMaker's 63; checked anyway, cheaply.
            group = AwsNames(self.name_prefix).model_package_group(model)
            if not _GROUP_NAME_RE.fullmatch(group):
                raise ValueError(
                    f"Registry: model package group name {group!r} is longer than the "
                    "63 characters SageMaker allows; shorten the model name or the prefix"
                )
        if self.mlflow:
            if self.sagemaker_role_arn is None or self.artifact_bucket_name is None:
                raise ValueError(
                    "Registry: mlflow=True needs sagemaker_role_arn and artifact_bucket_name"
                )
            check_arn("Registry", "sagemaker_role_arn", self.sagemaker_role_arn)
            if self.mlflow_size not in _MLFLOW_SIZES:
                raise ValueError(
                    f"Registry: mlflow_size {self.mlflow_size!r} must be one of {_MLFLOW_SIZES}"
                )


class Registry(pulumi.ComponentResource):
    """Model package groups (``groups[model]``) and the optional MLflow tracking server."""

    groups: dict[str, aws.sagemaker.ModelPackageGroup]
    mlflow_server: aws.sagemaker.MlflowTrackingServer | None

    def __init__(self, name: str, args: RegistryArgs, opts: ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("tandem:aws:Registry", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        names = AwsNames(args.name_prefix)

        self.groups = {
            model: aws.sagemaker.ModelPackageGroup(
                f"{name}-{model}",
                model_package_group_name=names.model_package_group(model),
                model_package_group_description=f"Tandem model {model}",
                tags={**args.tags, "tandem:model": model},
                opts=child_opts,
            )
            for model in args.models
        }

        self.mlflow_server = None
        if args.mlflow:
            self.mlflow_server = aws.sagemaker.MlflowTrackingServer(
                f"{name}-mlflow",
                tracking_server_name=names.mlflow_server,
                artifact_store_uri=pulumi.Output.concat(
                    "s3://", args.artifact_bucket_name, "/mlflow"
                ),
                role_arn=args.sagemaker_role_arn,
                tracking_server_size=args.mlflow_size,
                # Registration goes through Tandem's lifecycle (evaluation gates, then
                # approval); MLflow must not create model packages behind its back.
                automatic_model_registration=False,
                tags=args.tags,
                opts=child_opts,
            )

        outputs: dict[str, object] = {
            "group_names": {m: g.model_package_group_name for m, g in self.groups.items()},
            "group_arns": {m: g.arn for m, g in self.groups.items()},
        }
        if self.mlflow_server is not None:
            outputs["mlflow_tracking_server_arn"] = self.mlflow_server.arn
            outputs["mlflow_tracking_server_url"] = self.mlflow_server.tracking_server_url
        self.register_outputs(outputs)
