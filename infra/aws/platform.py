"""The AWS platform: the components wired in order, and the stack outputs they produce.

Reached through `infra.aws.build_aws_platform`.

Order and why:
1. ``Storage`` (KMS key, data/models/logs buckets). The key policy names the stack's roles
   by ARN (``aws:PrincipalArn``), so it does not wait for them.
2. ``TrainingImage`` and ``ServingImage`` (the ECR repositories of the training and the
   serving image, encrypted with the key).
3. ``PseudonymSecret`` (the pseudonym key's secret, encrypted with the key, no value).
4. ``Identity`` (SageMaker, one Lambda role per model, CI), scoped to the buckets, the key,
   the repositories (SageMaker pulls from them, CI pushes to them) and the secret.
5. ``Registry (model package groups, optional MLflow server on the SageMaker role).
6. ``Audit`` (CloudTrail into the logs bucket), after the logs bucket policy that lets the
   trail deliver.
7. ``Serving`` (the code archive in the models bucket; per model a Lambda, its ``live``
   alias and IAM Function URL, on that model's role).
8. ``Monitoring`` (encrypted SNS topic, alarms on each function and each model).

`AwsPlatform.outputs` is the contract with the ML side (`contract.outputs.AWS`:
`ml/clouds/aws/` is built from these keys alone). Every name comes from `AwsNames`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws
from pulumi import Output, ResourceOptions

from contract import metrics
from contract.outputs import AWS
from contract.serving import LIVE_ALIAS
from infra.aws import policies
from infra.aws.config import ECR_IMAGE_RE
from infra.aws.identity import GithubOidcArgs, Identity, IdentityArgs
from infra.aws.images import ImageArgs, ServingImage, TrainingImage
from infra.aws.names import BUCKET_KINDS, AwsNames
from infra.aws.secrets import PseudonymSecret, PseudonymSecretArgs
from infra.aws.storage import Storage, StorageArgs

if TYPE_CHECKING:
    from infra.config import StackConfig


def ecr_repository_arns(image_uri: str | None, partition: str = "aws") -> list[str]:
    """The repository an overriding ``tandem:training_image_uri`` is pulled from (none for
    an image that is not in ECR)."""
    if not image_uri:
        return []
    match = ECR_IMAGE_RE.fullmatch(image_uri)
    if not match:
        return []
    return [
        f"arn:{partition}:ecr:{match['region']}:{match['account']}:repository/{match['repository']}"
    ]


class AwsPlatform(pulumi.ComponentResource):
    """Every AWS component of one stack; children are attributes (``storage``, ...)."""

    storage: Storage
    training: TrainingImage
    serving_image: ServingImage
    secrets: PseudonymSecret
    identity: Identity
    registry: Any
    audit: Any
    serving: Any
    monitoring: Any

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        stack: str,
        opts: ResourceOptions | None = None,
        *,
        archive_path: str | None = None,
        build_dir: str | None = None,
    ) -> None:
        super().__init__("tandem:aws:Platform", name, None, opts)
        # Imported here: these components are optional pieces of the platform and some
        # pull in build tooling (the Lambda bundle) that plain policy code does not need.
        from infra.aws import audit, monitoring, registry, serving

        if cfg.aws is None:
            raise ValueError(f"AwsPlatform: stack {stack!r} has no AWS section (tandem:aws)")
        self.cfg = cfg
        self.stack = stack
        self.names = names = AwsNames.of(cfg)
        aws_cfg = cfg.aws
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))

        def after(*resources: pulumi.Resource) -> ResourceOptions:
            return ResourceOptions.merge(child_opts, ResourceOptions(depends_on=list(resources)))

        region = aws_cfg.region
        partition = policies.partition_for(region)
        tags = cfg.all_tags
        prefix = cfg.name_prefix
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        account_id = caller.account_id

        role_names = [names.sagemaker_role, *(names.lambda_role(m) for m in cfg.models)]
        if cfg.github_oidc is not None:
            role_names.append(names.ci_role)
        key_users = account_id.apply(
            lambda acct: [policies.role_arn(acct, n, partition) for n in role_names]
        )
        trail_prefix = "cloudtrail"

        def trail_statements(logs_bucket_arn: str, acct: str) -> list[dict]:
            return audit.cloudtrail_bucket_policy_statements(
                logs_bucket_arn,
                trail_prefix,
                acct,
                audit.trail_arn(prefix, acct, region, partition),
            )

        self.storage = Storage(
            "storage",
            StorageArgs(
                name_prefix=prefix,
                account_id=account_id,
                region=region,
                partition=partition,
                bucket_names={
                    kind: account_id.apply(lambda acct, k=kind: names.bucket(k, acct))
                    for kind in BUCKET_KINDS
                },
                key_user_role_arns=key_users,
                deployer_principal_arns=caller.arn.apply(policies.principal_arn_of_caller),
                key_log_group_patterns=(
                    names.trail_log_group.rsplit("/", 1)[0] + "/*",
                    names.function_log_group_pattern,
                ),
                logs_bucket_statements=trail_statements,
                noncurrent_version_expiration_days=aws_cfg.s3.noncurrent_version_expiration_days,
                abort_incomplete_multipart_days=aws_cfg.s3.abort_incomplete_multipart_days,
                log_expiration_days=cfg.log_retention_days,
                force_destroy=cfg.environment == "dev",
                tags=tags,
            ),
            opts=child_opts,
        )
        storage = self.storage

        def image_args(tag: str) -> ImageArgs:
            return ImageArgs(
                name_prefix=prefix,
                kms_key_arn=storage.key.arn,
                tag=tag,
                force_delete=cfg.environment == "dev",
                tags=tags,
            )

        self.training = TrainingImage(
            "training", image_args(aws_cfg.training_image_tag), opts=child_opts
        )
        self.serving_image = ServingImage(
            "serving-image", image_args(aws_cfg.serving_image_tag), opts=child_opts
        )
        repository_arn = self.training.repository.arn
        serving_repository_arn = self.serving_image.repository.arn
        # The SageMaker role pulls the image the jobs run (the stack's own, or the
        # override's) and the serving image a model package names for SageMaker hosting.
        pull_from = Output.all(
            *(
                ecr_repository_arns(aws_cfg.training_image_uri, partition)
                if aws_cfg.training_image_uri is not None
                else [repository_arn]
            ),
            serving_repository_arn,
        )

        self.secrets = PseudonymSecret(
            "secrets",
            PseudonymSecretArgs(
                name_prefix=prefix,
                kms_key_arn=storage.key.arn,
                recovery_window_days=0 if cfg.environment == "dev" else 30,
                tags=tags,
            ),
            opts=child_opts,
        )

        gh = cfg.github_oidc
        self.identity = Identity(
            "identity",
            IdentityArgs(
                name_prefix=prefix,
                account_id=account_id,
                region=region,
                partition=partition,
                data_bucket_arn=storage.data_bucket.arn,
                models_bucket_arn=storage.models_bucket.arn,
                kms_key_arn=storage.key.arn,
                model_package_group_names=[names.model_package_group(m) for m in cfg.models],
                models=list(cfg.models),
                sagemaker_role_name=names.sagemaker_role,
                pseudonym_secret_arn=self.secrets.secret.arn,
                ci_role_name=names.ci_role if gh is not None else "",
                ecr_repository_arns=pull_from,
                training_repository_arn=repository_arn if gh is not None else None,
                serving_repository_arn=serving_repository_arn if gh is not None else None,
                mlflow=aws_cfg.mlflow,
                github_oidc=(
                    GithubOidcArgs(
                        repository=gh.repository,
                        subject=gh.subject,
                        provider_arn=aws_cfg.github_oidc_provider_arn,
                    )
                    if gh is not None
                    else None
                ),
                tags=tags,
            ),
            opts=child_opts,
        )
        identity = self.identity

        self.registry = registry.Registry(
            "registry",
            registry.RegistryArgs(
                name_prefix=prefix,
                models=list(cfg.models),
                tags=tags,
                mlflow=aws_cfg.mlflow,
                sagemaker_role_arn=identity.sagemaker_role.arn if aws_cfg.mlflow else None,
                artifact_bucket_name=storage.models_bucket.bucket if aws_cfg.mlflow else None,
            ),
            # The MLflow server checks its role's access to the bucket when it starts.
            opts=after(identity.sagemaker_policy),
        )

        self.audit = audit.Audit(
            "audit",
            audit.AuditArgs(
                name_prefix=prefix,
                kms_key_arn=storage.key.arn,
                logs_bucket_name=storage.logs_bucket.bucket,
                data_bucket_arn=storage.data_bucket.arn,
                models_bucket_arn=storage.models_bucket.arn,
                logs_prefix=trail_prefix,
                log_retention_days=cfg.log_retention_days,
                tags=tags,
            ),
            # CloudTrail checks the bucket policy and the key policy at creation.
            opts=after(storage.policies["logs"], storage.key),
        )

        self.serving = serving.Serving(
            "serving",
            serving.ServingArgs(
                name_prefix=prefix,
                models=list(cfg.models),
                role_arns={m: role.arn for m, role in identity.lambda_roles.items()},
                kms_key_arn=storage.key.arn,
                models_bucket=storage.models_bucket.bucket,
                archive_path=archive_path,
                memory_mb=aws_cfg.lambda_.memory_mb,
                timeout_s=aws_cfg.lambda_.timeout_s,
                reserved_concurrency=aws_cfg.lambda_.reserved_concurrency,
                log_retention_days=cfg.log_retention_days,
                build_dir=build_dir,
                tags=tags,
            ),
            # A function's first start needs its role's permissions in place; the code
            # object is written under the bucket's policy.
            opts=after(*identity.lambda_policies.values(), storage.policies["models"]),
        )

        self.monitoring = monitoring.Monitoring(
            "monitoring",
            monitoring.MonitoringArgs(
                name_prefix=prefix,
                kms_key_arn=storage.key.arn,
                functions={m: e.function.name for m, e in self.serving.endpoints.items()},
                models=list(cfg.models),
                alias_name=LIVE_ALIAS,
                alarm_emails=list(cfg.alarm_emails),
                tags=tags,
            ),
            opts=child_opts,
        )

        self.register_outputs(self.outputs())

    def outputs(self) -> dict[str, Output[Any]]:
        """The stack outputs: exactly ``AWS.required + AWS.informational``, plus the
        ``AWS.optional`` ones whose feature is on (`contract.outputs`)."""
        cfg, names = self.cfg, self.names
        storage, identity = self.storage, self.identity
        out: dict[str, Any] = {
            "cloud": AWS.cloud,
            "stack": self.stack,
            "region": cfg.aws.region,
            "name_prefix": names.prefix,
            "kms_key_arn": storage.key.arn,
            "data_bucket": storage.data_bucket.bucket,
            "models_bucket": storage.models_bucket.bucket,
            "sagemaker_role_arn": identity.sagemaker_role.arn,
            "model_package_groups": {
                model: group.model_package_group_name
                for model, group in self.registry.groups.items()
            },
            "endpoints": {
                model: {
                    "function_name": e.function.name,
                    "alias": e.alias.name,
                    "url": e.function_url.function_url,
                }
                for model, e in self.serving.endpoints.items()
            },
            "metric_namespace": metrics.NAMESPACE,
            "training_image_uri": cfg.aws.training_image_uri or self.training.image_uri,
            "serving_image_uri": self.serving_image.image_uri,
            "pseudonym_secret_arn": self.secrets.secret.arn,
            # informational: for people and tools, read by no adapter
            "logs_bucket": storage.logs_bucket.bucket,
            "lambda_role_arns": {m: r.arn for m, r in identity.lambda_roles.items()},
            "alarm_topic_arn": self.monitoring.topic.arn,
            "alarm_names": self.monitoring.alarm_names,
            "training_image_repository_url": self.training.repository.repository_url,
            "serving_image_repository_url": self.serving_image.repository.repository_url,
            "lambda_code_key": self.serving.code.key,
            # Every stack exports the same keys; "" says this stack has no CI role.
            "ci_role_arn": identity.ci_role.arn if identity.ci_role is not None else "",
        }
        if self.registry.mlflow_server is not None:
            out["mlflow_tracking_server_arn"] = self.registry.mlflow_server.arn
        AWS.check_exported(out, "AwsPlatform.outputs")
        return {key: Output.from_input(value) for key, value in out.items()}


__all__ = ["AwsPlatform", "ecr_repository_arns"]
