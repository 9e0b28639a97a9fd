"""Serving: LambdaEndpoint over the stack's Lambda function and its `live` alias.

A deploy sets the model's environment on the function, publishes a version described
`<model>:v<version>` and moves the alias (a canary routes a weight of the traffic to the new
version); a rollback re-points the alias to the version published before. Each deployment
is recorded under `deployments/<model>/` in the models bucket.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from contract.serving import ENV_MODEL_NAME, ENV_MODEL_URI, ENV_MODEL_VERSION
from ml.clouds.aws.common import _code, _message, translate_errors
from ml.clouds.base import ArtifactStore, Deployment, ModelVersion, checked_model
from ml.clouds.records import DeploymentLog, now
from ml.errors import ConfigError, ConflictError, NotFoundError, TandemError

# Lambda version descriptions are at most 256 characters.
LAMBDA_DESCRIPTION_MAX = 256


def _version_tag(model: str, version: int) -> str:
    return f"{model}:v{version}"


@translate_errors
class LambdaEndpoint:
    """EndpointTarget over the stack's Lambda function and its `live` alias.

    The function has one `MODEL_URI` (infra/aws/serving.py), so it serves one model at a
    time: deploying another model's version replaces what it serves. Deployments are
    recorded one object each under `deployments/<model>/`, named by time, so `history` is
    a listing and `current` its last entry.
    """

    def __init__(
        self,
        lambda_client: Any,
        store: ArtifactStore,
        *,
        function_name: str,
        alias: str,
        url: str,
        poll_seconds: float = 1.0,
        timeout_seconds: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = lambda_client
        self.store = store
        self.log = DeploymentLog(store)
        self.function_name = function_name
        self.alias = alias
        self.url = url
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.sleep = sleep

    # records
    def history(self, model: str) -> list[Deployment]:
        return self.log.history(checked_model(model))

    def current(self, model: str) -> Deployment | None:
        return self.log.current(checked_model(model))

    # lambda
    def _alias(self) -> dict[str, Any]:
        return self.client.get_alias(FunctionName=self.function_name, Name=self.alias)

    @staticmethod
    def _weights(alias: Mapping[str, Any]) -> dict[str, float]:
        routing = alias.get("RoutingConfig") or {}
        return {k: float(v) for k, v in (routing.get("AdditionalVersionWeights") or {}).items()}

    def _alias_serves(self, alias: Mapping[str, Any], deployment: Deployment) -> bool:
        version = deployment.details.get("function_version")
        weights = self._weights(alias)
        if deployment.canary_weight is None:
            return alias.get("FunctionVersion") == version and not weights
        return (
            alias.get("FunctionVersion") == deployment.details.get("primary_function_version")
            and set(weights) == {version}
            and math.isclose(weights[version], deployment.canary_weight)
        )

    def _wait_ready(self) -> dict[str, Any]:
        """The function's configuration once no update is in progress."""
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            conf = self.client.get_function_configuration(FunctionName=self.function_name)
            update = conf.get("LastUpdateStatus") or "Successful"
            state = conf.get("State") or "Active"
            if update == "Failed":
                raise TandemError(
                    f"updating {self.function_name} failed: "
                    f"{conf.get('LastUpdateStatusReason') or 'no reason given'}"
                )
            if state == "Failed":
                raise TandemError(
                    f"{self.function_name} is in state Failed: {conf.get('StateReason')}"
                )
            if update == "Successful" and state == "Active":
                return conf
            if time.monotonic() > deadline:
                raise TandemError(
                    f"{self.function_name}: still {state}/{update} after {self.timeout_seconds:g}s"
                )
            self.sleep(self.poll_seconds)

    def published_version(self, model: str, version: int, artifact_uri: str) -> str | None:
        """The Lambda version already published for this model version, if any."""
        tag = _version_tag(model, version)
        found: list[int] = []
        pages = self.client.get_paginator("list_versions_by_function").paginate(
            FunctionName=self.function_name
        )
        for page in pages:
            for conf in page.get("Versions", []):
                if conf.get("Version") == "$LATEST":
                    continue
                if (conf.get("Description") or "").split(" ", 1)[0] != tag:
                    continue
                variables = (conf.get("Environment") or {}).get("Variables")
                if variables is not None and variables.get(ENV_MODEL_URI) != artifact_uri:
                    continue
                found.append(int(conf["Version"]))
        return str(max(found)) if found else None

    def _publish(self, mv: ModelVersion) -> str:
        conf = self._wait_ready()
        environment = conf.get("Environment") or {}
        if "Error" in environment:
            error = environment["Error"]
            raise ConfigError(
                f"cannot read the environment of {self.function_name} "
                f"({error.get('ErrorCode')}: {error.get('Message')}); the deployer needs "
                "kms:Decrypt on the stack key through Lambda"
            )
        variables = dict(environment.get("Variables") or {})
        wanted = {
            **variables,
            ENV_MODEL_URI: mv.artifact_uri,
            ENV_MODEL_NAME: mv.model,
            ENV_MODEL_VERSION: str(mv.version),
        }
        guard = {"RevisionId": conf["RevisionId"]} if conf.get("RevisionId") else {}
        try:
            if wanted != variables:
                self.client.update_function_configuration(
                    FunctionName=self.function_name, Environment={"Variables": wanted}, **guard
                )
                conf = self._wait_ready()
                guard = {"RevisionId": conf["RevisionId"]} if conf.get("RevisionId") else {}
            published = self.client.publish_version(
                FunctionName=self.function_name,
                Description=f"{_version_tag(mv.model, mv.version)} {mv.artifact_uri}"[
                    :LAMBDA_DESCRIPTION_MAX
                ],
                **guard,
            )
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailedException", "ResourceConflictException"):
                raise ConflictError(
                    f"{self.function_name} changed while deploying {mv.model} v{mv.version} "
                    f"({_message(exc)}); deploy again"
                ) from exc
            raise
        served = (published.get("Environment") or {}).get("Variables")
        if served is not None and served.get(ENV_MODEL_URI) != mv.artifact_uri:
            raise ConflictError(
                f"{self.function_name} version {published['Version']} serves "
                f"{served.get(ENV_MODEL_URI)}, not {mv.artifact_uri}: another deploy interleaved"
            )
        return str(published["Version"])

    def deploy(self, version: ModelVersion, *, canary_weight: float | None = None) -> Deployment:
        if canary_weight is not None and not 0.0 < canary_weight < 1.0:
            raise TandemError(
                f"canary_weight must be between 0 and 1 (exclusive), got {canary_weight}"
            )
        current = self.current(version.model)
        alias = self._alias()
        if (
            current is not None
            and current.version == version.version
            and current.canary_weight == canary_weight
            and self._alias_serves(alias, current)
        ):
            return current
        with tempfile.TemporaryDirectory() as tmp:
            # never point the endpoint at an artifact that is missing or fails its manifest
            self.store.get_artifact(version.artifact_uri, Path(tmp))
        reused = self.published_version(version.model, version.version, version.artifact_uri)
        function_version = reused or self._publish(version)
        details = {
            "function_name": self.function_name,
            "alias": self.alias,
            "function_version": function_version,
            "published": "false" if reused else "true",
        }
        if canary_weight is None:
            routing: dict[str, Any] = {"AdditionalVersionWeights": {}}
            primary = function_version
        else:
            primary = str(alias.get("FunctionVersion"))
            if current is None or primary in ("$LATEST", function_version):
                raise TandemError(
                    f"{version.model} v{version.version}: a canary needs another live version "
                    "of the model to keep as the primary; deploy without a canary first"
                )
            routing = {"AdditionalVersionWeights": {function_version: canary_weight}}
            details["primary_function_version"] = primary
            details["primary_model_version"] = str(
                current.details.get("primary_model_version", current.version)
                if current.canary_weight is not None
                else current.version
            )
        guard = {"RevisionId": alias["RevisionId"]} if alias.get("RevisionId") else {}
        try:
            self.client.update_alias(
                FunctionName=self.function_name,
                Name=self.alias,
                FunctionVersion=primary,
                RoutingConfig=routing,
                **guard,
            )
        except ClientError as exc:
            if _code(exc) == "PreconditionFailedException":
                raise ConflictError(
                    f"alias {self.alias} of {self.function_name} moved while deploying; "
                    "deploy again"
                ) from exc
            raise
        deployment = Deployment(
            model=version.model,
            version=version.version,
            artifact_uri=version.artifact_uri,
            endpoint=self.url,
            deployed_at=now(),
            canary_weight=canary_weight,
            details=details,
        )
        self.log.append(deployment)
        return deployment

    # invoke
    def invoke(self, model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Invoke the `live` alias as the Function URL would (a payload 2.0 POST /predict)."""
        live = self.current(model)
        if live is None:
            raise NotFoundError(f"model {model!r} is not deployed")
        event = {
            "version": "2.0",
            "rawPath": "/predict",
            "requestContext": {"http": {"method": "POST", "path": "/predict"}},
            "headers": {"content-type": "application/json"},
            "body": json.dumps({"instances": rows}),
            "isBase64Encoded": False,
        }
        answer = self.client.invoke(
            FunctionName=self.function_name, Qualifier=self.alias, Payload=json.dumps(event)
        )
        raw = answer["Payload"].read()
        if answer.get("FunctionError"):
            raise TandemError(f"{self.function_name}: the function failed: {raw[:500]!r}")
        try:
            response = json.loads(raw)
            body = response.get("body", "")
            payload = json.loads(body) if isinstance(body, str) else body
        except (ValueError, AttributeError):
            raise TandemError(f"{self.function_name}: not a JSON answer: {raw[:200]!r}") from None
        status = int(response.get("statusCode", 200))
        if status >= 400 or not isinstance(payload, dict) or "predictions" not in payload:
            raise TandemError(
                f"{self.function_name} answered {status} with no predictions: "
                f"{json.dumps(payload)[:300]}"
            )
        return {
            "model": payload.get("model", model),
            "version": int(payload.get("version", live.version)),
            "predictions": payload["predictions"],
        }
