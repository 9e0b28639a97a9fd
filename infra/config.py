"""Typed, validated stack configuration.

A stack's settings live in ``Pulumi.<stack>.yaml`` under the ``tandem:`` namespace (plus
``aws:region``). `load` turns that mapping into a frozen `StackConfig`, or raises a
`ConfigError` whose every line names the stack, the key and what was expected, e.g.::

    stack 'prod': tandem:log_retention_days: must be >= 365 in prod (got 30)

`from_pulumi` does the same from inside a running Pulumi program. Nothing here imports
Pulumi at module level, so the config can be validated (and tested) without it.

Names derived from the config (buckets, roles, the function, log groups) are methods of
`StackConfig`, so every component and every policy computes the same name from the same
place, and a role policy can name a resource before the resource exists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic import model_validator as _model_validator
from pydantic_core import PydanticCustomError

NAMESPACE = "tandem"

# 2-24 characters: `<prefix>-<model>` must fit SageMaker's 63-character model package group
# names and `<prefix>-sagemaker-execution` IAM's 64-character role names, and buckets are
# `<prefix>-<kind>-<account id>` (at most 24 + 20 of S3's 63). Same rule as the components'
# own argument check (infra/aws/_checks.py), so a config that loads also builds.
NAME_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,22}[a-z0-9]$")
# Model names are DNS labels (lowercase letters, digits, inner hyphens): they appear in S3
# keys, model package group names, alarm names and metric dimensions.
MODEL_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
# With a prefix of at most 24, `<prefix>-<model>` is at most 57 characters: inside the 63
# SageMaker allows for a model package group name.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackageGroup.html
MODEL_PACKAGE_GROUP_MAX = 63
# A practical address check (one @, a dotted domain, no spaces): SNS email subscriptions
# need a deliverable address; the full RFC 5322 grammar is not the point here.
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
)
# Commercial, GovCloud and ISO partitions: us-east-1, us-gov-west-1, eu-central-2, ...
AWS_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
GITHUB_REPOSITORY_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
S3_URI_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+$")
# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag|@sha256:digest]
ECR_IMAGE_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)(:[A-Za-z0-9._-]{1,128}|@sha256:[a-f0-9]{64})$"
)

# The only retention periods CloudWatch Logs accepts:
# https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip
PROD_MIN_LOG_RETENTION_DAYS = 365  # CKV_AWS_338: keep logs at least a year in production

ENVIRONMENTS = ("dev", "staging", "prod")

# Tandem's training image (deploy/training/Dockerfile: Python 3.11 and the project's
# dependencies) lives in the stack's own ECR repository, `<prefix>-training`, under an
# immutable tag. The default tag is the project version; a stack sets
# `tandem:training_image_tag` to the tag its CI pushed.
# `tandem:training_image_uri` overrides the whole image (e.g. one image shared by several
# stacks). The repository is created either way: an empty repository costs nothing, CI's
# push permission keeps one target, and turning the override on or off never tries to
# delete a repository that holds images (ECR refuses to delete a non-empty repository).
DEFAULT_TRAINING_IMAGE_TAG = "0.1.0"
# Docker's tag grammar: a word character, then up to 127 word characters, dots or hyphens.
# https://docs.docker.com/reference/cli/docker/image/tag/
IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ConfigError(ValueError):
    """A stack config is malformed. Each line: ``stack '<s>': tandem:<key>: <expected>``."""


def _fail(key: str, message: str, value: Any = None) -> PydanticCustomError:
    """An error that carries its config key, for checks that involve several fields."""
    return PydanticCustomError("tandem_config", message, {"key": key, "value": value})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LambdaConfig(_Model):
    """Size of the serving function. Limits from the Lambda quotas page:
    https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html"""

    memory_mb: int = Field(1024, ge=128, le=10240, strict=True)
    timeout_s: int = Field(30, ge=1, le=900, strict=True)
    # CKV_AWS_115: always set, so one model cannot starve the account's concurrency pool.
    reserved_concurrency: int = Field(5, ge=1, le=1000, strict=True)


GITHUB_OIDC_PROVIDER_RE = re.compile(
    r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/token\.actions\.githubusercontent\.com$"
)


class GithubOidcConfig(_Model):
    """Who may assume the CI deploy role: one repository and one environment or branch.

    An account holds one GitHub OIDC provider; a second stack in the same account sets
    ``provider_arn`` to reuse it instead of creating it again.
    """

    repository: str
    environment: str | None = None
    branch: str | None = None
    provider_arn: str | None = None

    @field_validator("provider_arn")
    @classmethod
    def _provider(cls, value: str | None) -> str | None:
        if value is not None and not GITHUB_OIDC_PROVIDER_RE.fullmatch(value):
            raise ValueError(
                "must be the ARN of the account's token.actions.githubusercontent.com OIDC provider"
            )
        return value

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not GITHUB_REPOSITORY_RE.fullmatch(value):
            raise ValueError("must be 'owner/name' of a GitHub repository")
        return value

    @field_validator("environment", "branch")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        # A wildcard here would widen the trust policy to every environment/branch.
        if value is not None and (not value or any(c in value for c in "*?: ")):
            raise ValueError("must be a literal name, without wildcards, ':' or spaces")
        return value

    @_model_validator(mode="after")
    def _exactly_one(self) -> GithubOidcConfig:
        if (self.environment is None) == (self.branch is None):
            raise _fail(
                "github_oidc",
                "must set exactly one of 'environment' or 'branch'",
                {"environment": self.environment, "branch": self.branch},
            )
        return self

    @property
    def subject(self) -> str:
        """The `token.actions.githubusercontent.com:sub` claim the CI role trusts."""
        if self.environment is not None:
            return f"repo:{self.repository}:environment:{self.environment}"
        return f"repo:{self.repository}:ref:refs/heads/{self.branch}"


class StackConfig(_Model):
    """Everything a stack is built from. Build with `load` (or `from_pulumi`)."""

    stack: str
    environment: Literal["dev", "staging", "prod"]
    clouds: tuple[Literal["aws", "azure"], ...] = ("aws",)
    name_prefix: str
    region: str
    models: tuple[str, ...]
    log_retention_days: int = Field(90, strict=True)
    noncurrent_version_expiration_days: int = Field(90, ge=1, le=3650, strict=True)
    abort_incomplete_multipart_days: int = Field(7, ge=1, le=365, strict=True)
    alarm_emails: tuple[str, ...] = ()
    lambda_: LambdaConfig = Field(default_factory=LambdaConfig, alias="lambda")
    model_uri: str | None = None
    github_oidc: GithubOidcConfig | None = None
    mlflow: bool = Field(False, strict=True)
    training_image_tag: str = DEFAULT_TRAINING_IMAGE_TAG
    training_image_uri: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("clouds")
    @classmethod
    def _clouds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one of 'aws', 'azure'")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a cloud")
        return value

    @field_validator("name_prefix")
    @classmethod
    def _name_prefix(cls, value: str) -> str:
        if not NAME_PREFIX_RE.fullmatch(value):
            raise ValueError(
                "must be 2-24 characters of lowercase letters, digits and hyphens, starting "
                "with a letter and not ending with a hyphen"
            )
        if "--" in value:
            raise ValueError("must not contain '--' (S3 reserves it in bucket names)")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one model")
        for model in value:
            if not MODEL_NAME_RE.fullmatch(model):
                raise ValueError(
                    f"model name {model!r} must be 1-32 lowercase letters, digits and hyphens, "
                    "starting and ending with a letter or digit"
                )
        duplicates = sorted({m for m in value if value.count(m) > 1})
        if duplicates:
            raise ValueError(f"must not repeat a model ({', '.join(duplicates)})")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"must be a CloudWatch Logs retention period, one of {list(LOG_RETENTION_DAYS)}"
            )
        return value

    @field_validator("alarm_emails")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for email in value:
            if not EMAIL_RE.fullmatch(email):
                raise ValueError(f"{email!r} is not an email address")
        return value

    @field_validator("model_uri")
    @classmethod
    def _model_uri(cls, value: str | None) -> str | None:
        if value is not None and not S3_URI_RE.fullmatch(value):
            raise ValueError("must be an S3 URI, s3://<bucket>/<key>")
        return value

    @field_validator("training_image_tag")
    @classmethod
    def _image_tag(cls, value: str) -> str:
        if not IMAGE_TAG_RE.fullmatch(value):
            raise ValueError(
                "must be an image tag: 1-128 letters, digits, '_', '.' or '-', not starting "
                "with '.' or '-'"
            )
        if value == "latest":
            # The repository's tags are immutable: "latest" could be pushed exactly once.
            raise ValueError(
                "must name one build (the repository's tags are immutable), not 'latest'"
            )
        return value

    @field_validator("training_image_uri")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not ECR_IMAGE_RE.fullmatch(value):
            raise ValueError(
                "must be an ECR image URI, <account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.lower().startswith("aws:"):
                raise ValueError(f"tag key {key!r} uses the reserved 'aws:' prefix")
        return value

    @_model_validator(mode="after")
    def _cross_checks(self) -> StackConfig:
        if self.environment == "prod" and self.log_retention_days < PROD_MIN_LOG_RETENTION_DAYS:
            raise _fail(
                "log_retention_days",
                f"must be >= {PROD_MIN_LOG_RETENTION_DAYS} in prod",
                self.log_retention_days,
            )
        if "aws" in self.clouds and not AWS_REGION_RE.fullmatch(self.region):
            raise _fail("region", "must be an AWS region such as 'us-east-1'", self.region)
        return self

    # -- names every component derives from the config -------------------------------
    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    def bucket_name(self, kind: Literal["data", "models", "logs"], account_id: str) -> str:
        """S3 names are global: the account id keeps two accounts' stacks apart."""
        return f"{self.name_prefix}-{kind}-{account_id}"

    def model_package_group_name(self, model: str) -> str:
        return f"{self.name_prefix}-{model}"

    @property
    def function_name(self) -> str:
        return f"{self.name_prefix}-serve"

    @property
    def function_log_group_name(self) -> str:
        # Lambda writes to this group, always: https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs.html
        return f"/aws/lambda/{self.function_name}"

    @property
    def sagemaker_role_name(self) -> str:
        return f"{self.name_prefix}-sagemaker-execution"

    @property
    def lambda_role_name(self) -> str:
        return f"{self.name_prefix}-lambda-serve"

    @property
    def ci_role_name(self) -> str:
        return f"{self.name_prefix}-ci-deploy"

    @property
    def training_repository_name(self) -> str:
        """The stack's ECR repository for Tandem's training image (deploy/training/)."""
        return f"{self.name_prefix}-training"

    @property
    def all_tags(self) -> dict[str, str]:
        """Tags on every resource: the configured ones plus project/stack/environment."""
        return {
            **self.tags,
            "tandem:project": "tandem",
            "tandem:stack": self.stack,
            "tandem:environment": self.environment,
        }


# The keys a `tandem:` config may hold, with the StackConfig field each one feeds.
_KEYS = {
    "clouds": "clouds",
    "environment": "environment",
    "name_prefix": "name_prefix",
    "region": "region",
    "models": "models",
    "log_retention_days": "log_retention_days",
    "noncurrent_version_expiration_days": "noncurrent_version_expiration_days",
    "abort_incomplete_multipart_days": "abort_incomplete_multipart_days",
    "alarm_emails": "alarm_emails",
    "lambda": "lambda",
    "model_uri": "model_uri",
    "github_oidc": "github_oidc",
    "mlflow": "mlflow",
    "training_image_tag": "training_image_tag",
    "training_image_uri": "training_image_uri",
    "tags": "tags",
}
# Keys whose values are plain strings in Pulumi config (the others are JSON: lists,
# objects, numbers, booleans).
_STRING_KEYS = frozenset(
    {
        "environment",
        "name_prefix",
        "region",
        "model_uri",
        "training_image_tag",
        "training_image_uri",
    }
)
_DEFAULT_LOG_RETENTION = {"dev": 30, "staging": 90, "prod": 365}


def _environment_from_stack(stack: str) -> str | None:
    lowered = stack.lower()
    for env in ENVIRONMENTS:
        if lowered == env or lowered.startswith((f"{env}-", f"{env}_", f"{env}.")):
            return env
    return None


def _default_name_prefix(stack: str) -> str:
    # Pulumi stack names may hold uppercase letters, '_' and '.'; bucket names may not.
    slug = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-")
    return f"tandem-{slug}"


def _describe(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known key"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
              "less_than": "<"}[kind]  # fmt: skip
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be an integer"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind in ("string_type",):
        return "must be a string"
    if kind in ("list_type", "tuple_type"):
        return "must be a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _key_of(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "tandem_config":
        # Cross-field checks carry their key; a nested model's check is located at its field.
        key = str(err["ctx"]["key"])
        if not loc or loc[-1] != key:
            loc = [*loc, key]
    # Tuple items add an index: name the list key and the position.
    parts: list[str] = []
    for part in loc:
        if part.isdigit() and parts:
            parts[-1] = f"{parts[-1]}[{part}]"
        else:
            parts.append(part)
    return f"{NAMESPACE}:" + ".".join(parts)


def _format(stack: str, exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors():
        value = err.get("input")
        if err["type"] == "tandem_config":
            value = err["ctx"].get("value")
        got = "" if err["type"] == "missing" or value is None else f" (got {value!r})"
        if isinstance(value, (dict, BaseModel)) and err["type"] != "extra_forbidden":
            got = ""
        lines.append(f"stack {stack!r}: {_key_of(err)}: {_describe(err)}{got}")
    return ConfigError("\n".join(lines))


def load(stack: str, raw: Mapping[str, Any]) -> StackConfig:
    """Validate a stack's config, as found under ``config:`` in ``Pulumi.<stack>.yaml``.

    Keys are namespaced: ``tandem:<key>`` for ours; ``aws:region`` (or ``tandem:region``)
    sets the region. Keys of other namespaces (``aws:profile``, ...) are ignored; an unknown
    ``tandem:`` key is an error, so a typo never silently falls back to a default.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"stack {stack!r}: config must be a mapping of keys to values")
    ours: dict[str, Any] = {}
    errors: list[str] = []
    for key, value in raw.items():
        namespace, _, name = str(key).partition(":")
        if namespace != NAMESPACE:
            continue
        if name not in _KEYS:
            errors.append(
                f"stack {stack!r}: {NAMESPACE}:{name}: is not a known key "
                f"(known: {', '.join(sorted(_KEYS))})"
            )
            continue
        ours[_KEYS[name]] = value
    if errors:
        raise ConfigError("\n".join(errors))

    if "environment" not in ours:
        env = _environment_from_stack(stack)
        if env is None:
            raise ConfigError(
                f"stack {stack!r}: {NAMESPACE}:environment: is required when the stack name "
                f"does not start with one of {', '.join(ENVIRONMENTS)}"
            )
        ours["environment"] = env
    ours.setdefault("name_prefix", _default_name_prefix(stack))
    if "region" not in ours:
        region = raw.get("aws:region") or raw.get("azure-native:location")
        if region is None:
            raise ConfigError(
                f"stack {stack!r}: aws:region: is required (or set {NAMESPACE}:region)"
            )
        ours["region"] = region
    if "log_retention_days" not in ours and ours["environment"] in _DEFAULT_LOG_RETENTION:
        ours["log_retention_days"] = _DEFAULT_LOG_RETENTION[ours["environment"]]
    try:
        return StackConfig.model_validate({"stack": stack, **ours})
    except ValidationError as exc:
        raise _format(stack, exc) from None


def from_pulumi() -> StackConfig:
    """Load the running stack's config (``pulumi.Config("tandem")`` and ``aws:region``)."""
    import pulumi  # imported here so the module is usable without the Pulumi runtime

    stack = pulumi.get_stack()
    cfg = pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    for key in _KEYS:
        value = cfg.get(key)
        if value is None:
            continue
        if key in _STRING_KEYS:
            raw[f"{NAMESPACE}:{key}"] = value
            continue
        try:
            raw[f"{NAMESPACE}:{key}"] = json.loads(value)
        except json.JSONDecodeError:
            # Leave it a string: validation then says what type was expected.
            raw[f"{NAMESPACE}:{key}"] = value
    # Unknown tandem: keys (typos) are errors in `load` too, so a typo is never ignored.
    for key in _all_config_keys():
        if key.startswith(f"{NAMESPACE}:") and key.partition(":")[2] not in _KEYS:
            raw[key] = None
    region = pulumi.Config("aws").get("region")
    if region is not None:
        raw["aws:region"] = region
    return load(stack, raw)


def _all_config_keys() -> list[str]:
    """Every config key set for the running stack (``namespace:key``)."""
    from pulumi.runtime import config as runtime_config

    return sorted({*runtime_config.get_config_env(), *runtime_config.CONFIG.get()})
