"""The stack's roles: SageMaker execution, one per model's serving Lambda, and optionally CI's.

Each role has exactly one inline policy, built by `infra.aws.policies` (no managed
``*FullAccess`` policy; no AWSLambdaBasicExecutionRole either: a Lambda policy grants its
own log group only). Each model's function runs as ``<prefix>-<model>-lambda``, which reads
only that model's artifacts and writes only its captures. The CI role is assumable only
through GitHub's OIDC provider, by one repository and one environment or branch. The
SageMaker role pulls the training (and serving) image from their repositories; the CI role
pushes them there, and describes, initialises and reads the pseudonym key secret.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
from pulumi import Input, Output, ResourceOptions

from infra.aws import policies
from infra.aws.names import AwsNames, model_name_problems

# Roles' sessions: one hour is enough for a deploy; training jobs refresh their own.
MAX_SESSION_SECONDS = 3600


@dataclass
class GithubOidcArgs:
    """One repository and one ``sub`` claim (``repo:<o>/<r>:environment:<e>`` or
    ``repo:<o>/<r>:ref:refs/heads/<b>``). An account has one GitHub OIDC provider: pass
    ``provider_arn`` to reuse an existing one instead of creating it."""

    repository: str
    subject: str
    provider_arn: str | None = None


@dataclass
class IdentityArgs:
    """Inputs of the identity component.

    Role names are fixed (not auto-named) so that the KMS key policy and the other
    components can name the roles before they exist. Bucket, key and repository ARNs may
    be Outputs.

    models: the stack's models: one serving role each, ``AwsNames.lambda_role(model)``,
        for the function ``AwsNames.function(model)``.
    ecr_repository_arns: repositories the SageMaker role pulls images from (the
        repository of the image the stack's jobs run, and the serving image's).
    training_repository_arn, serving_repository_arn: the stack's image repositories, which
        the CI role pushes to (with GitHub OIDC only).
    pseudonym_secret_arn: the stack's pseudonym key secret (`infra.aws.secrets`).
    """

    name_prefix: str
    account_id: Input[str]
    region: str
    data_bucket_arn: Input[str]
    models_bucket_arn: Input[str]
    kms_key_arn: Input[str]
    model_package_group_names: Sequence[str]
    models: Sequence[str]
    sagemaker_role_name: str
    pseudonym_secret_arn: Input[str]
    ci_role_name: str = ""
    ecr_repository_arns: Input[Sequence[Input[str]]] = ()
    training_repository_arn: Input[str] | None = None
    serving_repository_arn: Input[str] | None = None
    mlflow: bool = False
    tracing: bool = True
    github_oidc: GithubOidcArgs | None = None
    partition: str = "aws"
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.model_package_group_names:
            raise ValueError("Identity: model_package_group_names must name at least one group")
        if not self.models:
            raise ValueError("Identity: models must name at least one model")
        for role in (self.sagemaker_role_name, self.ci_role_name):
            if len(role) > 64:
                raise ValueError(f"Identity: role name {role!r} is longer than 64 characters")
        for model in self.models:
            problems = model_name_problems(self.name_prefix, model)
            if problems:
                raise ValueError(f"Identity: model {model!r}: {'; '.join(problems)}")
        if self.github_oidc is not None:
            if not self.ci_role_name:
                raise ValueError("Identity: github_oidc needs ci_role_name")
            if not self.github_oidc.subject.startswith(f"repo:{self.github_oidc.repository}:"):
                raise ValueError(
                    f"Identity: github_oidc.subject {self.github_oidc.subject!r} is not a "
                    f"subject of repository {self.github_oidc.repository!r}"
                )


class Identity(pulumi.ComponentResource):
    """``sagemaker_role`` + ``sagemaker_policy``, ``lambda_roles[model]`` +
    ``lambda_policies[model]``; with GitHub OIDC also ``oidc_provider`` (unless reused),
    ``ci_role`` + ``ci_policy``."""

    sagemaker_role: aws.iam.Role
    sagemaker_policy: aws.iam.RolePolicy
    lambda_roles: dict[str, aws.iam.Role]
    lambda_policies: dict[str, aws.iam.RolePolicy]
    oidc_provider: aws.iam.OpenIdConnectProvider | None
    ci_role: aws.iam.Role | None
    ci_policy: aws.iam.RolePolicy | None

    def __init__(self, name: str, args: IdentityArgs, opts: ResourceOptions | None = None):
        args.validate()
        super().__init__("tandem:aws:Identity", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        region, partition = args.region, args.partition

        names = AwsNames(args.name_prefix)

        def tracking_server(account_id: str) -> str | None:
            """The stack's MLflow tracking server (named, so known before it exists)."""
            if not args.mlflow:
                return None
            return policies.mlflow_tracking_server_arn(
                region, account_id, names.mlflow_server, partition
            )

        def group_arns(account_id: str) -> list[str]:
            return [
                policies.model_package_group_arn(region, account_id, g, partition)
                for g in args.model_package_group_names
            ]

        self.sagemaker_role = aws.iam.Role(
            f"{name}-sagemaker",
            name=args.sagemaker_role_name,
            description=f"{args.name_prefix}: SageMaker training jobs and MLflow",
            assume_role_policy=json.dumps(policies.sagemaker_trust_policy()),
            max_session_duration=MAX_SESSION_SECONDS,
            tags=args.tags,
            opts=child_opts,
        )
        self.sagemaker_policy = aws.iam.RolePolicy(
            f"{name}-sagemaker-policy",
            role=self.sagemaker_role.id,
            name="tandem-sagemaker-execution",
            policy=Output.all(
                args.account_id,
                args.data_bucket_arn,
                args.models_bucket_arn,
                args.kms_key_arn,
                Output.from_input(args.ecr_repository_arns),
            ).apply(
                lambda a: json.dumps(
                    policies.sagemaker_execution_policy(
                        region=region,
                        account_id=a[0],
                        data_bucket=a[1],
                        models_bucket=a[2],
                        kms_key_arn=a[3],
                        model_package_group_arns=group_arns(a[0]),
                        training_job_prefix=args.name_prefix,
                        ecr_repository_arns=list(a[4] or ()),
                        mlflow=args.mlflow,
                        mlflow_tracking_server_arn=tracking_server(a[0]),
                        partition=partition,
                    )
                )
            ),
            opts=ResourceOptions.merge(child_opts, ResourceOptions(parent=self.sagemaker_role)),
        )

        self.lambda_roles, self.lambda_policies = {}, {}
        for model in args.models:
            self._serving_role(name, model, names, args, child_opts)

        self.oidc_provider = None
        self.ci_role = None
        self.ci_policy = None
        if args.github_oidc is not None:
            gh = args.github_oidc
            provider_arn: Input[str]
            if gh.provider_arn:
                provider_arn = gh.provider_arn
            else:
                self.oidc_provider = aws.iam.OpenIdConnectProvider(
                    f"{name}-github-oidc",
                    url=policies.GITHUB_OIDC_URL,
                    client_id_lists=[policies.STS_AUDIENCE],
                    # AWS trusts GitHub's OIDC endpoint through its own CA library; the
                    # thumbprint is no longer used for it, and the argument is optional.
                    # https://github.blog/changelog/2023-06-27-github-actions-update-on-oidc-integration-with-aws/
                    tags=args.tags,
                    opts=child_opts,
                )
                provider_arn = self.oidc_provider.arn
            self.ci_role = aws.iam.Role(
                f"{name}-ci",
                name=args.ci_role_name,
                description=f"{args.name_prefix}: CI model lifecycle for {gh.repository}",
                assume_role_policy=Output.from_input(provider_arn).apply(
                    lambda arn: json.dumps(policies.github_oidc_trust_policy(arn, gh.subject))
                ),
                max_session_duration=MAX_SESSION_SECONDS,
                tags=args.tags,
                opts=child_opts,
            )
            self.ci_policy = aws.iam.RolePolicy(
                f"{name}-ci-policy",
                role=self.ci_role.id,
                name="tandem-ci-deploy",
                policy=Output.all(
                    args.account_id,
                    args.data_bucket_arn,
                    args.models_bucket_arn,
                    args.kms_key_arn,
                    self.sagemaker_role.arn,
                    Output.from_input(args.training_repository_arn),
                    args.pseudonym_secret_arn,
                    Output.from_input(args.serving_repository_arn),
                ).apply(
                    lambda a: json.dumps(
                        policies.ci_deploy_policy(
                            region=region,
                            account_id=a[0],
                            data_bucket=a[1],
                            models_bucket=a[2],
                            kms_key_arn=a[3],
                            sagemaker_role_arn=a[4],
                            model_package_group_arns=group_arns(a[0]),
                            function_names=[names.function(m) for m in args.models],
                            name_prefix=args.name_prefix,
                            training_repository_arn=a[5],
                            pseudonym_secret_arn=a[6],
                            serving_repository_arn=a[7],
                            mlflow_tracking_server_arn=tracking_server(a[0]),
                            partition=partition,
                        )
                    )
                ),
                opts=ResourceOptions.merge(child_opts, ResourceOptions(parent=self.ci_role)),
            )

        outputs: dict[str, object] = {
            "sagemaker_role_arn": self.sagemaker_role.arn,
            "lambda_role_arns": {m: r.arn for m, r in self.lambda_roles.items()},
        }
        if self.ci_role is not None:
            outputs["ci_role_arn"] = self.ci_role.arn
        self.register_outputs(outputs)

    def _serving_role(
        self,
        name: str,
        model: str,
        names: AwsNames,
        args: IdentityArgs,
        child_opts: ResourceOptions,
    ) -> None:
        """``model``'s function role and its one inline policy (its own prefixes and logs)."""
        region, partition = args.region, args.partition
        function = names.function(model)
        role = aws.iam.Role(
            f"{name}-{model}-lambda",
            name=names.lambda_role(model),
            description=f"{args.name_prefix}: serving function {function}",
            assume_role_policy=json.dumps(policies.lambda_trust_policy()),
            max_session_duration=MAX_SESSION_SECONDS,
            tags={**args.tags, "tandem:model": model},
            opts=child_opts,
        )
        self.lambda_roles[model] = role
        self.lambda_policies[model] = aws.iam.RolePolicy(
            f"{name}-{model}-lambda-policy",
            role=role.id,
            name="tandem-lambda-serve",
            policy=Output.all(args.account_id, args.models_bucket_arn, args.kms_key_arn).apply(
                lambda a: json.dumps(
                    policies.lambda_execution_policy(
                        region=region,
                        model=model,
                        models_bucket=a[1],
                        kms_key_arn=a[2],
                        log_group=policies.log_group_arn(
                            region, a[0], names.function_log_group(model), partition
                        ),
                        tracing=args.tracing,
                    )
                )
            ),
            opts=ResourceOptions.merge(child_opts, ResourceOptions(parent=role)),
        )
