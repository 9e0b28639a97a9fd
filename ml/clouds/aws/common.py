"""What every part of the AWS adapter shares: the stack outputs, the boto3 clients.

`AwsOutputs` checks the stack outputs once (`REQUIRED_OUTPUTS`); `Clients` hands out one
session's boto3 clients, all pointed at the optional `endpoint_url`. Also here: the bucket
prefixes and the small helpers for botocore errors, timestamps, JSON records and s3:// URIs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

from ml.errors import ConfigError, NotFoundError

REQUIRED_OUTPUTS = (
    "cloud",
    "stack",
    "region",
    "name_prefix",
    "kms_key_arn",
    "data_bucket",
    "models_bucket",
    "logs_bucket",
    "sagemaker_role_arn",
    "lambda_role_arn",
    "model_package_groups",
    "function_name",
    "function_alias",
    "function_url",
    "alarm_topic_arn",
    "alarm_names",
    "metric_namespace",
    "training_image_uri",
)

DATASETS, ARTIFACTS, REGISTRY, DEPLOYMENTS = "datasets/", "artifacts/", "registry/", "deployments/"
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", exc))


def _missing(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(exc) in NOT_FOUND_CODES or status == 404


def _json(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode()


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise NotFoundError(f"{uri}: not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


# -- outputs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AwsOutputs:
    """The stack outputs, checked once: a missing key is a ConfigError that names it."""

    stack: str
    region: str
    name_prefix: str
    kms_key_arn: str
    data_bucket: str
    models_bucket: str
    logs_bucket: str
    sagemaker_role_arn: str
    lambda_role_arn: str
    model_package_groups: dict[str, str]
    function_name: str
    function_alias: str
    function_url: str
    alarm_topic_arn: str
    alarm_names: list[str]
    metric_namespace: str
    training_image_uri: str
    endpoint_url: str | None = None
    ci_role_arn: str | None = None
    mlflow_tracking_server_arn: str | None = None

    @classmethod
    def parse(cls, outputs: Mapping[str, Any]) -> AwsOutputs:
        for key in REQUIRED_OUTPUTS:
            if outputs.get(key) in (None, ""):
                raise ConfigError(
                    f"aws stack outputs lack {key!r} (have: {', '.join(sorted(outputs)) or 'none'})"
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
        alarms = outputs["alarm_names"]
        return cls(
            stack=str(outputs["stack"]),
            region=str(outputs["region"]),
            name_prefix=str(outputs["name_prefix"]),
            kms_key_arn=str(outputs["kms_key_arn"]),
            data_bucket=str(outputs["data_bucket"]),
            models_bucket=str(outputs["models_bucket"]),
            logs_bucket=str(outputs["logs_bucket"]),
            sagemaker_role_arn=str(outputs["sagemaker_role_arn"]),
            lambda_role_arn=str(outputs["lambda_role_arn"]),
            model_package_groups={str(k): str(v) for k, v in groups.items()},
            function_name=str(outputs["function_name"]),
            function_alias=str(outputs["function_alias"]),
            function_url=str(outputs["function_url"]),
            alarm_topic_arn=str(outputs["alarm_topic_arn"]),
            alarm_names=[
                str(a) for a in (alarms.values() if isinstance(alarms, Mapping) else alarms)
            ],
            metric_namespace=str(outputs["metric_namespace"]),
            training_image_uri=str(outputs["training_image_uri"]),
            endpoint_url=outputs.get("endpoint_url") or None,
            ci_role_arn=outputs.get("ci_role_arn") or None,
            mlflow_tracking_server_arn=outputs.get("mlflow_tracking_server_arn") or None,
        )


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
            config = Config(retries={"mode": "standard", "max_attempts": 5})
            if service == "s3" and self.endpoint_url:
                # an emulator on an IP address and port cannot serve bucket subdomains
                config = config.merge(Config(s3={"addressing_style": "path"}))
            self._cache[service] = self.session.client(
                service, endpoint_url=self.endpoint_url, config=config
            )
        return self._cache[service]
