"""Typed, validated stack configuration: the common fields, then one section per cloud.

A stack's settings live in ``Pulumi.<stack>.yaml`` under the ``tandem:`` namespace::

    config:
      aws:region: eu-west-1                # Pulumi's AWS provider reads it there
      azure-native:location: westeurope    # and Pulumi's Azure provider this one
      tandem:clouds: [aws, azure]
      tandem:models: [credit]
      tandem:log_retention_days: 400
      tandem:alarm_emails: [ml-oncall@example.com]
      tandem:github_oidc: {repository: example-org/tandem, environment: production}
      tandem:aws: {lambda: {memory_mb: 2048}, mlflow: true}   # infra/aws/config.py
      tandem:azure: {functions: {max_instances: 40}}           # infra/azure/config.py

Common (top level) is what any cloud's platform is built from: which clouds, the
environment, the name prefix, the models, who is alerted, how long logs are kept, who may
deploy from CI (a GitHub repository and environment or branch: AWS and Azure both federate
GitHub's OIDC token with that same subject), and tags. What only one cloud understands
(Lambda sizes, S3 lifecycle, ECR images, SageMaker's MLflow, the account's OIDC provider;
Flex Consumption sizes, the training cluster, network allow-lists, Key Vault purge protection)
is in that cloud's section, ``tandem:<cloud>``, a model of its own (`_SECTIONS`). A section's
region comes from its provider's own key (``aws:region``, ``azure-native:location``).

`load` turns that mapping into a frozen `StackConfig`, or raises a `ConfigError` whose every
line names the stack, the full key and what was expected, e.g.::

    stack 'prod': tandem:aws.lambda.memory_mb: must be >= 128 (got 1)

`from_pulumi` does the same from inside a running Pulumi program. Nothing here imports
Pulumi at module level, so the config can be validated (and tested) without it. Names
derived from the config live with each cloud (`infra.aws.names.AwsNames`,
`infra.azure.names.AzureNames`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic import model_validator as _model_validator
from pydantic_core import PydanticCustomError

from contract import naming
from infra.aws._checks import LOG_RETENTION_DAYS
from infra.aws.config import AwsConfig
from infra.azure.config import AzureConfig

NAMESPACE = "tandem"

ENVIRONMENTS = ("dev", "staging", "prod")
PROD_MIN_LOG_RETENTION_DAYS = 365  # CKV_AWS_338: keep logs at least a year in production
GITHUB_REPOSITORY_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")

# One section per cloud: `tandem:<cloud>` is validated by its model.
_SECTIONS: dict[str, type[BaseModel]] = {"aws": AwsConfig, "azure": AzureConfig}
# Where each cloud's provider reads its region (the section's field, the provider's key);
# copied into the section, never repeated.
_REGION_KEYS = {"aws": ("region", "aws:region"), "azure": ("location", "azure-native:location")}
# Log Analytics keeps a workspace's data 30-730 days (interactive retention):
# https://learn.microsoft.com/en-us/azure/azure-monitor/logs/data-retention-configure
LOG_ANALYTICS_RETENTION_DAYS = (30, 730)


class ConfigError(ValueError):
    """A stack config is malformed. Each line: ``stack '<s>': tandem:<key>: <expected>``."""


def _fail(key: str, message: str, value: Any = None) -> PydanticCustomError:
    """An error that carries its config key, for checks that involve several fields."""
    return PydanticCustomError("tandem_config", message, {"key": key, "value": value})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GithubOidcConfig(_Model):
    """Who may deploy from CI: one repository and one environment or branch."""

    repository: str
    environment: str | None = None
    branch: str | None = None

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
        """The ``sub`` claim of GitHub's OIDC token that CI's identity trusts."""
        if self.environment is not None:
            return f"repo:{self.repository}:environment:{self.environment}"
        return f"repo:{self.repository}:ref:refs/heads/{self.branch}"


class StackConfig(_Model):
    """Everything a stack is built from. Build with `load` (or `from_pulumi`)."""

    stack: str
    environment: Literal["dev", "staging", "prod"]
    clouds: tuple[Literal["aws", "azure"], ...] = ("aws",)
    name_prefix: str
    models: tuple[str, ...]
    log_retention_days: int = Field(90, strict=True)
    alarm_emails: tuple[str, ...] = ()
    github_oidc: GithubOidcConfig | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    aws: AwsConfig | None = None
    azure: AzureConfig | None = None

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
        if not naming.NAME_PREFIX_RE.fullmatch(value):
            raise ValueError(f"must be {naming.NAME_PREFIX_RULE}")
        if not naming.is_name_prefix(value):
            raise ValueError("must not contain '--' (S3 reserves it in bucket names)")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one model")
        for model in value:
            naming.check_model_name(model)
        duplicates = sorted({m for m in value if value.count(m) > 1})
        if duplicates:
            raise ValueError(f"must not repeat a model ({', '.join(duplicates)})")
        return value

    @field_validator("alarm_emails")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for email in value:
            if not naming.is_email(email):
                raise ValueError(f"{email!r} is not an email address")
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
        if self.aws is not None and self.log_retention_days not in LOG_RETENTION_DAYS:
            raise _fail(
                "log_retention_days",
                f"must be a CloudWatch Logs retention period, one of {list(LOG_RETENTION_DAYS)}",
                self.log_retention_days,
            )
        if self.aws is not None:
            # One function and one role per model: each name must fit its service's limit.
            from infra.aws.names import model_name_problems

            self._models_fit(lambda model: model_name_problems(self.name_prefix, model))
        for cloud in _SECTIONS:
            if (cloud in self.clouds) != (getattr(self, cloud) is not None):
                raise _fail(cloud, f"is set only for a stack whose clouds include {cloud!r}")
        if self.azure is not None:
            self._azure_checks(self.azure)
        return self

    def _models_fit(self, problems_of: Callable[[str], list[str]]) -> None:
        """Each model's names fit the cloud's limits with this prefix (`problems_of`)."""
        for model in self.models:
            problems = problems_of(model)
            if problems:
                raise _fail(
                    "models",
                    f"model {model!r} with name prefix {self.name_prefix!r}: "
                    + "; ".join(problems)
                    + ": shorten the model name or tandem:name_prefix",
                    model,
                )

    def _azure_checks(self, azure: AzureConfig) -> None:
        from infra.azure import names as azure_names

        low, high = LOG_ANALYTICS_RETENTION_DAYS
        if not low <= self.log_retention_days <= high:
            raise _fail(
                "log_retention_days",
                f"must be {low}-{high} days on a stack with Azure (Log Analytics retention)",
                self.log_retention_days,
            )
        suffix = azure.name_suffix or azure_names.stack_suffix(self.stack, self.name_prefix)
        problems = azure_names.prefix_problems(self.name_prefix, suffix)
        if problems:
            raise _fail(
                "name_prefix",
                "; ".join(problems) + ": shorten tandem:name_prefix for Azure's name limits",
                self.name_prefix,
            )
        self._models_fit(
            lambda model: azure_names.model_name_problems(self.name_prefix, model, suffix)
        )
        if self.is_prod and azure.network.functions_subnet_id is None:
            raise _fail(
                "azure.network.functions_subnet_id",
                "is required in prod: the function apps reach the default-deny storage account "
                "and Key Vault through this subnet (delegated to Microsoft.App/environments)",
            )
        if azure.key_vault.purge_protection_waiver is not None and self.environment != "dev":
            raise _fail(
                "azure.key_vault.purge_protection_waiver",
                f"may be set only on a dev stack (this one is {self.environment}): "
                "purge protection stays on",
            )

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def all_tags(self) -> dict[str, str]:
        """Tags on every resource: the configured ones plus project/stack/environment."""
        return {
            **self.tags,
            "tandem:project": "tandem",
            "tandem:stack": self.stack,
            "tandem:environment": self.environment,
        }


# The keys a `tandem:` config may hold: StackConfig's fields (a cloud's section is one key).
_KEYS = tuple(name for name in StackConfig.model_fields if name != "stack")
# Keys whose values are plain strings in Pulumi config (the others are JSON: lists,
# objects, numbers, booleans).
_STRING_KEYS = frozenset({"environment", "name_prefix"})
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
    if len(loc) == 2 and loc[0] in _REGION_KEYS and loc[1] == _REGION_KEYS[loc[0]][0]:
        return _REGION_KEYS[loc[0]][1]
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

    Keys are namespaced: ``tandem:<key>`` for ours; ``aws:region`` sets the AWS section's
    region, ``azure-native:location`` the Azure section's location. Keys of other
    namespaces (``aws:profile``, ...) are ignored; an unknown
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
        ours[name] = value
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
    if "log_retention_days" not in ours and ours["environment"] in _DEFAULT_LOG_RETENTION:
        ours["log_retention_days"] = _DEFAULT_LOG_RETENTION[ours["environment"]]
    clouds = ours.get("clouds", StackConfig.model_fields["clouds"].default)
    for cloud, (field, region_key) in _REGION_KEYS.items():
        section = ours.get(cloud)
        if section is None and isinstance(clouds, (list, tuple)) and cloud in clouds:
            section = {}  # every field of a section has a default
        if not isinstance(section, Mapping):
            continue  # absent, or not a mapping: validation says so with the key
        if field in section:
            raise ConfigError(
                f"stack {stack!r}: {NAMESPACE}:{cloud}.{field}: is not a known key "
                f"(the {field} is {region_key})"
            )
        region = raw.get(region_key)
        if region is None:
            raise ConfigError(f"stack {stack!r}: {region_key}: is required")
        ours[cloud] = {**section, field: region}
    try:
        return StackConfig.model_validate({"stack": stack, **ours})
    except ValidationError as exc:
        raise _format(stack, exc) from None


def from_pulumi() -> StackConfig:
    """Load the running stack's config (``pulumi.Config("tandem")``, ``aws:region`` and
    ``azure-native:location``)."""
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
    for _field, region_key in _REGION_KEYS.values():
        namespace, _, key = region_key.partition(":")
        region = pulumi.Config(namespace).get(key)
        if region is not None:
            raw[region_key] = region
    return load(stack, raw)


def _all_config_keys() -> list[str]:
    """Every config key set for the running stack (``namespace:key``)."""
    from pulumi.runtime import config as runtime_config

    return sorted({*runtime_config.get_config_env(), *runtime_config.CONFIG.get()})
