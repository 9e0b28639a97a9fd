"""The inference endpoints on AWS: one Lambda function per model, each behind its own ``live``
alias, reached through an IAM-authenticated Function URL on that alias.

One function per model (``<prefix>-<model>-serve``), so deploying or rolling back one model
never changes what another serves, each has its own role (``<prefix>-<model>-lambda``, from
identity: that model's artifacts and captures only), log group, alarms and reserved
concurrency. Every function runs the same code archive, uploaded once to the models bucket
(``lambda/<archive name>``, KMS-encrypted): with numpy and onnxruntime it is ~37 MB zipped,
too close to Lambda's 50 MB direct-upload limit, so functions are created from S3.

Infrastructure and deploys own different things. Pulumi creates each function (with
``MODEL_NAME``), its first published version and the alias; after that the Tandem deploy
(``ml/clouds/aws/``) sets ``MODEL_URI``/``MODEL_VERSION``, publishes a version and moves
``live`` to it, and a rollback moves ``live`` back. So the functions' environment and the
aliases' versions are ignored by Pulumi after creation; ``pulumi up`` never rolls a deploy
back.

Controls: CKV_AWS_50 (tracing), CKV_AWS_115 (reserved concurrency), CKV_AWS_173
(environment encrypted with the CMK), CKV_AWS_258 (URL auth AWS_IAM), CKV_AWS_301 (no
resource policy at all), CKV_AWS_363 (supported runtime), CKV2_AWS_75 (no ``*`` origin),
CKV_AWS_66/158 (log group retention and CMK).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from contract import serving as endpoint
from deploy import bundle
from infra.aws._checks import check_arn, check_log_retention
from infra.aws.names import AwsNames, lambda_archive_key, lambda_log_group, model_name_problems
from infra.common.checks import check_models, check_name_prefix

# Runtimes we ship for: supported by Lambda (not deprecated) and by this project's
# Python range (pyproject: >=3.11,<3.14), with onnxruntime wheels for arm64:
# https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html
SUPPORTED_RUNTIMES = ("python3.12", "python3.13")
RUNTIME = "python3.12"  # the archive is built for it (its wheels, its compiled modules)
# Graviton: cheaper per GB-second, and onnxruntime ships aarch64 wheels.
ARCHITECTURE = "arm64"
# Headers a browser needs to send a SigV4-signed request to an AWS_IAM Function URL.
_CORS_HEADERS = (
    "authorization",
    "content-type",
    "x-amz-content-sha256",
    "x-amz-date",
    "x-amz-security-token",
)
_ORIGIN_RE = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^http://localhost(:[0-9]{1,5})?$")
# Set to 1 where the archive is never uploaded (Pulumi mocks): the project sources only,
# no numpy/onnxruntime download.
CODE_ONLY_ENV = "TANDEM_LAMBDA_CODE_ONLY"


def default_build_dir() -> Path:
    return bundle.REPO_ROOT / "build" / "lambda"


def lambda_archive(build_dir: str | os.PathLike[str], runtime: str = RUNTIME) -> Path:
    """The serving functions' code archive, built in ``build_dir`` for ``runtime`` on
    ``ARCHITECTURE``: the one place the program builds it. With its dependencies for
    ``pulumi up``; sources only under ``TANDEM_LAMBDA_CODE_ONLY=1``."""
    return bundle.build_lambda_zip(
        build_dir,
        dependencies=os.environ.get(CODE_ONLY_ENV) != "1",
        python=runtime.removeprefix("python"),
        arch=ARCHITECTURE,
    )


@dataclass
class ServingArgs:
    """Inputs of the inference endpoints.

    name_prefix: stack-wide prefix.
    models: one function each, ``AwsNames.function(model)``.
    role_arns: each model's execution role (identity's ``lambda_roles``).
    kms_key_arn: the stack's customer-managed key: encrypts environments, logs and the code.
    models_bucket: the models bucket's name; the code archive goes to ``lambda/`` in it.
    archive_path: a prebuilt code archive; None builds one with `lambda_archive` in
        ``build_dir`` (default ``build/lambda``).
    runtime: one of ``SUPPORTED_RUNTIMES``.
    memory_mb, timeout_s: each function's sizing.
    reserved_concurrency: concurrent executions reserved for (and capping) each function.
    log_retention_days: retention of ``/aws/lambda/<function>`` (a CloudWatch Logs value).
    allowed_origins: browser origins allowed by CORS (``https://host[:port]`` or
        ``http://localhost[:port]``); empty (the default) means no CORS at all.
    tags: applied to every resource.
    """

    name_prefix: str
    models: list[str]
    role_arns: Mapping[str, Input[str]]
    kms_key_arn: Input[str]
    models_bucket: Input[str]
    archive_path: str | os.PathLike[str] | None = None
    runtime: str = RUNTIME
    memory_mb: int = 1024
    timeout_s: int = 30
    reserved_concurrency: int = 5
    log_retention_days: int = 365
    allowed_origins: list[str] = field(default_factory=list)
    build_dir: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        check_name_prefix("Serving", self.name_prefix)
        check_models("Serving", self.models)
        for model in self.models:
            problems = model_name_problems(self.name_prefix, model)
            if problems:
                raise ValueError(f"Serving: model {model!r}: {'; '.join(problems)}")
        if set(self.role_arns) != set(self.models):
            raise ValueError(
                f"Serving: role_arns must name one role per model: models {sorted(self.models)}, "
                f"roles for {sorted(self.role_arns)}"
            )
        for model, arn in self.role_arns.items():
            check_arn("Serving", f"role_arns[{model!r}]", arn)
        check_arn("Serving", "kms_key_arn", self.kms_key_arn)
        check_log_retention("Serving", self.log_retention_days)
        if self.archive_path is not None and not Path(self.archive_path).is_file():
            raise ValueError(f"Serving: archive_path {str(self.archive_path)!r} is not a file")
        if self.runtime not in SUPPORTED_RUNTIMES:
            raise ValueError(
                f"Serving: runtime {self.runtime!r} is not supported; use one of "
                f"{SUPPORTED_RUNTIMES}"
            )
        # Limits: https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
        if not 128 <= self.memory_mb <= 10240:
            raise ValueError(f"Serving: memory_mb={self.memory_mb!r} must be in 128..10240")
        if not 1 <= self.timeout_s <= 900:
            raise ValueError(f"Serving: timeout_s={self.timeout_s!r} must be in 1..900")
        # 0 would throttle every request; unset (-1) would fail CKV_AWS_115.
        if not isinstance(self.reserved_concurrency, int) or self.reserved_concurrency < 1:
            raise ValueError(
                f"Serving: reserved_concurrency={self.reserved_concurrency!r} must be >= 1"
            )
        for origin in self.allowed_origins:
            if "*" in origin or not _ORIGIN_RE.fullmatch(origin):
                raise ValueError(
                    f"Serving: allowed_origins entry {origin!r} must be an exact origin "
                    "(https://host[:port] or http://localhost[:port]); wildcards are refused"
                )


@dataclass
class ModelEndpoint:
    """One model's log group, function (published), ``live`` alias and its URL."""

    log_group: aws.cloudwatch.LogGroup
    function: aws.lambda_.Function
    alias: aws.lambda_.Alias
    function_url: aws.lambda_.FunctionUrl


class Serving(pulumi.ComponentResource):
    """The code archive in S3 (``code``) and one `ModelEndpoint` per model (``endpoints``)."""

    archive_path: Path
    code: aws.s3.BucketObjectv2
    endpoints: dict[str, ModelEndpoint]

    def __init__(self, name: str, args: ServingArgs, opts: ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("tandem:aws:Serving", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))

        self.archive_path = Path(
            args.archive_path or lambda_archive(args.build_dir or default_build_dir())
        )
        # Through S3: the archive with its dependencies is over what a direct upload takes
        # comfortably (50 MB zipped). Encrypted with the stack key, like everything there.
        self.code = aws.s3.BucketObjectv2(
            f"{name}-code",
            bucket=args.models_bucket,
            key=lambda_archive_key(self.archive_path.name),
            source=pulumi.FileAsset(str(self.archive_path)),
            content_type="application/zip",
            server_side_encryption="aws:kms",
            kms_key_id=args.kms_key_arn,
            bucket_key_enabled=True,
            tags=args.tags,
            opts=child_opts,
        )
        code_hash = bundle.sha256_base64(self.archive_path)
        names = AwsNames(args.name_prefix)
        self.endpoints = {
            model: self._endpoint(name, model, names, args, code_hash, child_opts)
            for model in args.models
        }

        self.register_outputs(
            {
                "endpoints": {
                    model: {
                        "function_name": e.function.name,
                        "alias": e.alias.name,
                        "url": e.function_url.function_url,
                    }
                    for model, e in self.endpoints.items()
                },
                "code_key": self.code.key,
            }
        )

    def _endpoint(
        self,
        name: str,
        model: str,
        names: AwsNames,
        args: ServingArgs,
        code_hash: str,
        child_opts: ResourceOptions,
    ) -> ModelEndpoint:
        function_name = names.function(model)
        tags = {**args.tags, "tandem:model": model}
        # The function's own log group, created before the function, so Lambda does not
        # create it implicitly without retention or encryption.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-{model}-logs",
            name=lambda_log_group(function_name),
            retention_in_days=args.log_retention_days,
            kms_key_id=args.kms_key_arn,
            tags=tags,
            opts=child_opts,
        )
        function = aws.lambda_.Function(
            f"{name}-{model}-function",
            name=function_name,
            description=f"Tandem inference endpoint of model {model}",
            role=args.role_arns[model],
            runtime=args.runtime,
            architectures=[ARCHITECTURE],
            handler=bundle.LAMBDA_HANDLER,
            s3_bucket=self.code.bucket,
            s3_key=self.code.key,
            s3_object_version=self.code.version_id,
            source_code_hash=code_hash,
            memory_size=args.memory_mb,
            timeout=args.timeout_s,
            reserved_concurrent_executions=args.reserved_concurrency,
            # MODEL_URI / MODEL_VERSION come with the first deploy; until then the function
            # answers 503.
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables={endpoint.ENV_MODEL_NAME: model}
            ),
            kms_key_arn=args.kms_key_arn,
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="JSON", log_group=log_group.name
            ),
            publish=True,
            tags=tags,
            opts=ResourceOptions.merge(
                child_opts,
                ResourceOptions(
                    depends_on=[log_group, self.code],
                    # MODEL_URI is set by the Tandem deploy, which then publishes a
                    # version; reverting it here would silently change what a later
                    # published version serves.
                    ignore_changes=["environment"],
                ),
            ),
        )
        alias = aws.lambda_.Alias(
            f"{name}-{model}-live",
            name=endpoint.LIVE_ALIAS,
            description=f"Traffic to model {model}; the Tandem deploy and rollback move it",
            function_name=function.name,
            function_version=function.version,
            opts=ResourceOptions.merge(
                child_opts,
                # Only the first version comes from Pulumi. Afterwards deploys and
                # rollbacks move the alias (and its canary weights); `pulumi up` must
                # not move it back.
                ResourceOptions(ignore_changes=["function_version", "routing_config"]),
            ),
        )
        cors = None
        if args.allowed_origins:
            cors = aws.lambda_.FunctionUrlCorsArgs(
                allow_origins=sorted(args.allowed_origins),
                allow_methods=["POST"],
                allow_headers=list(_CORS_HEADERS),
                max_age=300,
            )
        # AWS_IAM: callers need lambda:InvokeFunctionUrl and (for URLs created since
        # October 2025) lambda:InvokeFunction on the alias, through their own IAM
        # policies: https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html
        # No resource-based policy is added, so nothing is public.
        function_url = aws.lambda_.FunctionUrl(
            f"{name}-{model}-url",
            function_name=function.name,
            qualifier=alias.name,
            authorization_type="AWS_IAM",
            cors=cors,
            opts=child_opts,
        )
        return ModelEndpoint(log_group, function, alias, function_url)
