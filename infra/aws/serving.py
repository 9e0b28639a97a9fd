"""The inference endpoint on AWS: a Lambda function behind a ``live`` alias, reached
through an IAM-authenticated Function URL on that alias.

Infrastructure and deploys own different things. Pulumi creates the function, its first
published version and the alias; after that the Tandem deploy (``ml/clouds/aws/``)
sets ``MODEL_URI``, publishes a version and moves ``live`` to it, and a rollback moves
``live`` back. So the function's environment and the alias's version are ignored by
Pulumi after creation; ``pulumi up`` never rolls a deploy back.

Controls: CKV_AWS_50 (tracing), CKV_AWS_115 (reserved concurrency), CKV_AWS_173
(environment encrypted with the CMK), CKV_AWS_258 (URL auth AWS_IAM), CKV_AWS_301 (no
resource policy at all), CKV_AWS_363 (supported runtime), CKV2_AWS_75 (no ``*`` origin),
CKV_AWS_66/158 (log group retention and CMK).

The function's role (from identity) needs: ``kms:Decrypt`` on the key (to read its
environment), ``xray:PutTraceSegments``/``xray:PutTelemetryRecords`` (active tracing),
``logs:CreateLogStream``/``logs:PutLogEvents`` on ``lambda_log_group(function_name)``, and read
access to the models bucket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from contract import serving as endpoint
from deploy import bundle
from infra.aws._checks import check_arn, check_log_retention
from infra.aws.names import AwsNames, lambda_log_group
from infra.common.checks import check_name_prefix

# Runtimes we ship for: supported by Lambda (not deprecated) and by this project's
# Python range (pyproject: >=3.11,<3.14), with onnxruntime wheels for arm64:
# https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html
SUPPORTED_RUNTIMES = ("python3.12", "python3.13")
# Function names: letters, digits, hyphens, underscores, at most 64 characters:
# https://docs.aws.amazon.com/lambda/latest/api/API_CreateFunction.html
_FUNCTION_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Headers a browser needs to send a SigV4-signed request to an AWS_IAM Function URL.
_CORS_HEADERS = (
    "authorization",
    "content-type",
    "x-amz-content-sha256",
    "x-amz-date",
    "x-amz-security-token",
)
_ORIGIN_RE = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^http://localhost(:[0-9]{1,5})?$")


def default_build_dir() -> Path:
    return bundle.REPO_ROOT / "build" / "lambda"


@dataclass
class ServingArgs:
    """Inputs of the inference endpoint.

    name_prefix: stack-wide prefix.
    role_arn: the function's execution role (see the module docstring for what it needs).
    kms_key_arn: the stack's customer-managed key: encrypts the environment and the logs.
    model_uri: initial ``MODEL_URI``, e.g.
        ``s3://<models bucket>/artifacts/<model>/<version>/model.tar.gz``; None leaves it
        unset and the endpoint answers 503 until the first deploy sets it.
    runtime: one of ``SUPPORTED_RUNTIMES``.
    memory_mb, timeout_s: function sizing.
    reserved_concurrency: concurrent executions reserved for (and capping) the function.
    log_retention_days: retention of ``/aws/lambda/<name>`` (a CloudWatch Logs value).
    allowed_origins: browser origins allowed by CORS (``https://host[:port]`` or
        ``http://localhost[:port]``); empty (the default) means no CORS at all.
    build_dir: where the code archive is written; defaults to ``build/lambda``.
    function_name: the function's name; defaults to ``<prefix>-serve``
        (``AwsNames.function``), which role and deploy policies name in advance.
    tags: applied to every resource.
    """

    name_prefix: str
    role_arn: Input[str]
    kms_key_arn: Input[str]
    model_uri: Input[str] | None = None
    runtime: str = "python3.12"
    memory_mb: int = 1024
    timeout_s: int = 30
    reserved_concurrency: int = 5
    log_retention_days: int = 365
    allowed_origins: list[str] = field(default_factory=list)
    build_dir: str | None = None
    function_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def resolved_function_name(self) -> str:
        return self.function_name or AwsNames(self.name_prefix).function

    def validate(self) -> None:
        check_name_prefix("Serving", self.name_prefix)
        check_arn("Serving", "role_arn", self.role_arn)
        check_arn("Serving", "kms_key_arn", self.kms_key_arn)
        check_log_retention("Serving", self.log_retention_days)
        if self.runtime not in SUPPORTED_RUNTIMES:
            raise ValueError(
                f"Serving: runtime {self.runtime!r} is not supported; use one of "
                f"{SUPPORTED_RUNTIMES}"
            )
        if not _FUNCTION_NAME_RE.fullmatch(self.resolved_function_name):
            raise ValueError(
                f"Serving: function name {self.resolved_function_name!r} must be 1-64 "
                "letters, digits, hyphens or underscores"
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


class Serving(pulumi.ComponentResource):
    """Log group, function (published), ``live`` alias and its IAM-authenticated URL."""

    archive_path: Path
    log_group: aws.cloudwatch.LogGroup
    function: aws.lambda_.Function
    alias: aws.lambda_.Alias
    function_url: aws.lambda_.FunctionUrl

    def __init__(self, name: str, args: ServingArgs, opts: ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("tandem:aws:Serving", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))

        self.archive_path = bundle.build_lambda_zip(args.build_dir or default_build_dir())

        # The function's own log group, created before the function, so Lambda does not
        # create it implicitly without retention or encryption.
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=lambda_log_group(args.resolved_function_name),
            retention_in_days=args.log_retention_days,
            kms_key_id=args.kms_key_arn,
            tags=args.tags,
            opts=child_opts,
        )

        variables = {} if args.model_uri is None else {endpoint.ENV_MODEL_URI: args.model_uri}
        self.function = aws.lambda_.Function(
            f"{name}-function",
            name=args.resolved_function_name,
            description="Tandem inference endpoint",
            role=args.role_arn,
            runtime=args.runtime,
            # Graviton: cheaper per GB-second, and onnxruntime ships aarch64 wheels.
            architectures=["arm64"],
            handler=bundle.LAMBDA_HANDLER,
            code=pulumi.FileArchive(str(self.archive_path)),
            source_code_hash=bundle.sha256_base64(self.archive_path),
            memory_size=args.memory_mb,
            timeout=args.timeout_s,
            reserved_concurrent_executions=args.reserved_concurrency,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=variables),
            kms_key_arn=args.kms_key_arn,
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="JSON", log_group=self.log_group.name
            ),
            publish=True,
            tags=args.tags,
            opts=ResourceOptions.merge(
                child_opts,
                ResourceOptions(
                    depends_on=[self.log_group],
                    # MODEL_URI is set by the Tandem deploy, which then publishes a
                    # version; reverting it here would silently change what a later
                    # published version serves.
                    ignore_changes=["environment"],
                ),
            ),
        )

        self.alias = aws.lambda_.Alias(
            f"{name}-live",
            name=endpoint.LIVE_ALIAS,
            description="Traffic goes here; the Tandem deploy and rollback move it",
            function_name=self.function.name,
            function_version=self.function.version,
            opts=ResourceOptions.merge(
                child_opts,
                # Only the first version comes from Pulumi. Afterwards deploys and
                # rollbacks move the alias; `pulumi up` must not move it back.
                ResourceOptions(ignore_changes=["function_version"]),
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
        self.function_url = aws.lambda_.FunctionUrl(
            f"{name}-url",
            function_name=self.function.name,
            qualifier=self.alias.name,
            authorization_type="AWS_IAM",
            cors=cors,
            opts=child_opts,
        )

        self.register_outputs(
            {
                "function_name": self.function.name,
                "alias_arn": self.alias.arn,
                "url": self.function_url.function_url,
            }
        )
