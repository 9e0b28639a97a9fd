"""What every part of the AWS adapter shares: the stack outputs, the boto3 clients, errors.

`AwsOutputs` checks the stack outputs once (the keys are `contract.outputs.AWS`); `Clients`
hands out one session's boto3 clients, all pointed at the optional `endpoint_url`;
`translate_errors` turns what botocore raises into Tandem's one-line errors, at every public
method of the adapter (`ml/clouds/base.py` promises callers nothing else escapes).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

from contract.outputs import AWS, ENDPOINT_KEYS, ENDPOINT_URL
from ml.clouds.translation import translating
from ml.errors import ConfigError, NotFoundError, TandemError

NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", exc))


def _missing(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(exc) in NOT_FOUND_CODES or status == 404


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise NotFoundError(f"{uri}: not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


# -- errors --------------------------------------------------------------------------------
def translated(exc: Exception) -> TandemError:
    """One line that says what failed and why, for an error botocore raised."""
    if isinstance(exc, ClientError):
        operation = getattr(exc, "operation_name", "") or "a call"
        code, message = _code(exc), _message(exc)
        if code == "NoSuchBucket":
            bucket = exc.response.get("Error", {}).get("BucketName", "")
            return NotFoundError(
                f"AWS {operation}: bucket {bucket or '(named in the stack outputs)'} does not "
                "exist: is the stack deployed, and are these its outputs?"
            )
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return TandemError(f"AWS {operation}: access denied ({message})")
        if _missing(exc):
            return NotFoundError(f"AWS {operation}: not found ({code}: {message})")
        return TandemError(f"AWS {operation} failed: {code}: {message}")
    if isinstance(exc, NoCredentialsError):
        return ConfigError("no AWS credentials found: set AWS_PROFILE or sign in (aws sso login)")
    if isinstance(exc, NoRegionError):
        return ConfigError("no AWS region: the stack outputs name one as 'region'")
    if isinstance(exc, EndpointConnectionError):
        return TandemError(f"cannot reach AWS at {exc.kwargs.get('endpoint_url', '?')}: {exc}")
    return TandemError(f"AWS call failed: {exc}")


# Every public method raises Tandem's errors, never botocore's.
translate_errors = translating((ClientError, BotoCoreError), translated)


# -- outputs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AwsOutputs:
    """The stack outputs the adapter reads (exactly `contract.outputs.AWS.read`), checked
    once: a missing key is a ConfigError that names it."""

    cloud: str
    stack: str
    region: str
    name_prefix: str
    kms_key_arn: str
    data_bucket: str
    models_bucket: str
    sagemaker_role_arn: str
    model_package_groups: dict[str, str]
    endpoints: dict[str, FunctionEndpoint]
    metric_namespace: str
    training_image_uri: str
    serving_image_uri: str
    pseudonym_secret_arn: str
    mlflow_tracking_server_arn: str | None = None
    endpoint_url: str | None = None  # an emulator's address (contract.outputs.ENDPOINT_URL)

    @classmethod
    def parse(cls, outputs: Mapping[str, Any]) -> AwsOutputs:
        missing = AWS.missing(outputs)
        if missing:
            raise ConfigError(
                f"aws stack outputs lack {', '.join(map(repr, missing))} "
                f"(have: {', '.join(sorted(outputs)) or 'none'})"
            )
        if outputs["cloud"] != "aws":
            raise ConfigError(f"stack outputs are for cloud {outputs['cloud']!r}, not 'aws'")
        groups = outputs["model_package_groups"]
        if isinstance(groups, str):  # a config value may arrive JSON-encoded
            try:
                groups = json.loads(groups)
            except ValueError:
                groups = None
        if not isinstance(groups, Mapping) or not groups:
            raise ConfigError(
                "aws stack output 'model_package_groups' must map model names to group names, "
                f"got {outputs['model_package_groups']!r}"
            )
        values = {key: str(outputs[key]) for key in AWS.required}
        values |= {key: (str(outputs[key]) if outputs.get(key) else None) for key in AWS.optional}
        values["model_package_groups"] = {str(k): str(v) for k, v in groups.items()}
        values["endpoints"] = _endpoints(outputs["endpoints"])
        return cls(**values, endpoint_url=outputs.get(ENDPOINT_URL) or None)


@dataclass(frozen=True)
class FunctionEndpoint:
    """One model's serving function: where a deploy points and what a client invokes."""

    function_name: str
    alias: str
    url: str


def _endpoints(raw: Any) -> dict[str, FunctionEndpoint]:
    """The `endpoints` output: {model: {"function_name", "alias", "url"}}, checked."""
    if isinstance(raw, str):  # a config value may arrive JSON-encoded
        with contextlib.suppress(ValueError):
            raw = json.loads(raw)
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(
            "aws stack output 'endpoints' must map model names to "
            f"{{{', '.join(map(repr, ENDPOINT_KEYS))}}}, got {str(raw)[:200]!r}"
        )
    endpoints = {}
    for model, entry in raw.items():
        lacking = [k for k in ENDPOINT_KEYS if not (isinstance(entry, Mapping) and entry.get(k))]
        if lacking:
            raise ConfigError(
                f"aws stack output 'endpoints' entry {model!r} lacks {', '.join(lacking)}"
            )
        endpoints[str(model)] = FunctionEndpoint(**{k: str(entry[k]) for k in ENDPOINT_KEYS})
    return endpoints


@functools.cache
def _model_loader() -> Any:
    """One botocore data loader per process: the service models (SageMaker's alone is
    megabytes of JSON) are parsed once, not again for every stack connected."""
    return botocore.session.get_session().get_component("data_loader")


class Clients:
    """boto3 clients of one session, all pointed at `endpoint_url` when the outputs give one."""

    def __init__(self, region: str, endpoint_url: str | None = None) -> None:
        core = botocore.session.get_session()
        core.register_component("data_loader", _model_loader())
        self.session = boto3.session.Session(botocore_session=core, region_name=region)
        self.endpoint_url = endpoint_url
        self._cache: dict[str, Any] = {}

    def __call__(self, service: str) -> Any:
        if service not in self._cache:
            # AWS_MAX_ATTEMPTS, botocore's own setting, still wins when a user sets it
            attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)
            config = Config(retries={"mode": "standard", "max_attempts": attempts})
            if service == "s3" and self.endpoint_url:
                # an emulator on an IP address and port cannot serve bucket subdomains
                config = config.merge(Config(s3={"addressing_style": "path"}))
            self._cache[service] = self.session.client(
                service, endpoint_url=self.endpoint_url, config=config
            )
        return self._cache[service]
