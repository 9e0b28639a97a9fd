"""Serving: LambdaEndpoint over each model's own Lambda function and its `live` alias.

Each model has a function of its own (`endpoints` in the stack outputs), so a deploy or a
rollback of one model never changes what another serves. A deploy sets the model's
environment on its function, publishes a version described `<model>:v<version>` and moves
the alias (a canary keeps the primary and routes a weight of the traffic to the new
version); a rollback re-points the alias to the version published before. Each deployment
is recorded under `deployments/<model>/`, but what is live is read from the alias itself:
its version's environment names the model version it serves (`MODEL_VERSION`), so a change
made outside Tandem (the console, an interrupted deploy) is seen, never hidden by the log.
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from contract.serving import (
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
    PREDICT_PATH,
    REQUEST_ID_HEADER,
)
from ml.clouds.answers import answer_or_error
from ml.clouds.aws.common import FunctionEndpoint, _code, _message, translate_errors
from ml.clouds.base import ArtifactStore, Deployment, ModelVersion, checked_model
from ml.clouds.records import DeploymentLog, now
from ml.errors import ConfigError, ConflictError, NotFoundError, TandemError

# Lambda version descriptions are at most 256 characters.
LAMBDA_DESCRIPTION_MAX = 256
ROUTES = ("live", "canary")


def _version_tag(model: str, version: int) -> str:
    return f"{model}:v{version}"


def _weights(alias: Mapping[str, Any]) -> dict[str, float]:
    routing = alias.get("RoutingConfig") or {}
    return {k: float(v) for k, v in (routing.get("AdditionalVersionWeights") or {}).items()}


def _serves(alias: Mapping[str, Any], deployment: Deployment) -> bool:
    """Whether the alias routes traffic exactly as `deployment` recorded."""
    version = deployment.details.get("function_version")
    weights = _weights(alias)
    if deployment.canary_weight is None:
        return alias.get("FunctionVersion") == version and not weights
    return (
        alias.get("FunctionVersion") == deployment.details.get("primary_function_version")
        and set(weights) == {version}
        and math.isclose(weights[version], deployment.canary_weight)
    )


def url_event(url: str, body: str, request_id: str) -> dict[str, Any]:
    """A POST /predict as a Function URL delivers it: a payload format 2.0 event.
    https://docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html#urls-payloads"""
    host = urlsplit(url).hostname or ""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": PREDICT_PATH,
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "host": host,
            REQUEST_ID_HEADER: request_id,
        },
        "requestContext": {
            "domainName": host,
            "http": {
                "method": "POST",
                "path": PREDICT_PATH,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "tandem",
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": body,
        "isBase64Encoded": False,
    }


@translate_errors
class LambdaEndpoint:
    """EndpointTarget over one Lambda function (and its `live` alias) per model.

    `endpoints` maps each model of the stack (`tandem:models`) to its function; deploying,
    invoking or reading a model without one is a ConfigError naming that key and the stack.
    """

    def __init__(
        self,
        lambda_client: Any,
        store: ArtifactStore,
        endpoints: Mapping[str, FunctionEndpoint],
        *,
        stack: str = "",
        poll_seconds: float = 1.0,
        timeout_seconds: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = lambda_client
        self.store = store
        self.log = DeploymentLog(store)
        self.endpoints = dict(endpoints)
        self.stack = stack
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.sleep = sleep

    def function(self, model: str) -> FunctionEndpoint:
        """`model`'s serving function; ConfigError when the stack has none for it."""
        model = checked_model(model)
        try:
            return self.endpoints[model]
        except KeyError:
            raise ConfigError(
                f"model {model!r} has no endpoint on stack {self.stack!r}: add it to "
                f"tandem:models and run `pulumi up` (endpoints: "
                f"{', '.join(sorted(self.endpoints)) or 'none'})"
            ) from None

    # what the alias serves
    def _alias(self, fn: FunctionEndpoint) -> dict[str, Any]:
        return self.client.get_alias(FunctionName=fn.function_name, Name=fn.alias)

    def _configuration(self, fn: FunctionEndpoint, version: str) -> tuple[dict, dict[str, str]]:
        """A published version's configuration and its environment, in clear."""
        conf = self.client.get_function_configuration(
            FunctionName=fn.function_name, Qualifier=version
        )
        return conf, self._variables(fn, conf)

    @staticmethod
    def _variables(fn: FunctionEndpoint, conf: Mapping[str, Any]) -> dict[str, str]:
        environment = conf.get("Environment") or {}
        if "Error" in environment:
            error = environment["Error"]
            raise ConfigError(
                f"cannot read the environment of {fn.function_name} "
                f"({error.get('ErrorCode')}: {error.get('Message')}); the deployer needs "
                "kms:Decrypt on the stack key through Lambda"
            )
        return dict(environment.get("Variables") or {})

    def _served(self, fn: FunctionEndpoint, model: str, version: str) -> tuple[dict, dict] | None:
        """(configuration, environment) of a function version serving a version of `model`;
        None for one that serves none (the version Pulumi published first)."""
        conf, variables = self._configuration(fn, version)
        if not variables.get(ENV_MODEL_VERSION, "").isdigit():
            return None
        if variables.get(ENV_MODEL_NAME, model) != model:
            raise ConfigError(
                f"{fn.function_name} version {version} serves model "
                f"{variables[ENV_MODEL_NAME]!r}, not {model!r}: the stack outputs' endpoints "
                f"do not match stack {self.stack!r}"
            )
        return conf, variables

    def _live(self, model: str, alias: Mapping[str, Any] | None = None) -> Deployment | None:
        fn = self.function(model)
        alias = alias if alias is not None else self._alias(fn)
        primary = str(alias.get("FunctionVersion"))
        weights = _weights(alias)
        served = self._served(fn, model, primary)
        if served is None:
            return None
        conf, variables = served
        details = {"function_name": fn.function_name, "alias": fn.alias}
        canary_weight = None
        if weights:
            (canary, canary_weight), *_ = weights.items()
            canary_served = self._served(fn, model, canary)
            if canary_served is None:
                raise TandemError(
                    f"{fn.function_name}: alias {fn.alias} routes {canary_weight:g} of the "
                    f"traffic to version {canary}, which serves no version of {model}"
                )
            details |= {
                "primary_function_version": primary,
                "primary_model_version": variables[ENV_MODEL_VERSION],
            }
            conf, variables, primary = *canary_served, canary
        details["function_version"] = primary
        logged = self.log.current(model)
        if logged is not None and _serves(alias, logged):
            return logged
        # the alias was moved outside Tandem (or a deploy stopped before its record)
        return Deployment(
            model=model,
            version=int(variables[ENV_MODEL_VERSION]),
            artifact_uri=variables.get(ENV_MODEL_URI, ""),
            endpoint=fn.url,
            deployed_at=str(conf.get("LastModified") or ""),
            canary_weight=canary_weight,
            details=details,
        )

    def current(self, model: str) -> Deployment | None:
        """What `model`'s alias serves, read from the alias: the recorded deployment when
        the alias routes as it recorded, else one described from the alias's versions."""
        return self._live(checked_model(model))

    def history(self, model: str) -> list[Deployment]:
        """The recorded deployments, oldest first, ending with what the alias serves."""
        model = checked_model(model)
        recorded = self.log.history(model)
        live = self._live(model)
        if live is not None and (not recorded or recorded[-1] != live):
            recorded.append(live)
        return recorded

    # deploy
    def _wait_ready(self, fn: FunctionEndpoint) -> dict[str, Any]:
        """The function's configuration once no update is in progress."""
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            conf = self.client.get_function_configuration(FunctionName=fn.function_name)
            update = conf.get("LastUpdateStatus") or "Successful"
            state = conf.get("State") or "Active"
            if update == "Failed":
                raise TandemError(
                    f"updating {fn.function_name} failed: "
                    f"{conf.get('LastUpdateStatusReason') or 'no reason given'}"
                )
            if state == "Failed":
                raise TandemError(
                    f"{fn.function_name} is in state Failed: {conf.get('StateReason')}"
                )
            if update == "Successful" and state == "Active":
                return conf
            if time.monotonic() > deadline:
                raise TandemError(
                    f"{fn.function_name}: still {state}/{update} after {self.timeout_seconds:g}s"
                )
            self.sleep(self.poll_seconds)

    def published_version(self, model: str, version: int, artifact_uri: str) -> str | None:
        """The Lambda version already published for this model version, if any."""
        fn = self.function(model)
        tag = _version_tag(model, version)
        found: list[int] = []
        pages = self.client.get_paginator("list_versions_by_function").paginate(
            FunctionName=fn.function_name
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

    def _publish(self, fn: FunctionEndpoint, mv: ModelVersion) -> str:
        conf = self._wait_ready(fn)
        variables = self._variables(fn, conf)
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
                    FunctionName=fn.function_name, Environment={"Variables": wanted}, **guard
                )
                conf = self._wait_ready(fn)
                guard = {"RevisionId": conf["RevisionId"]} if conf.get("RevisionId") else {}
            published = self.client.publish_version(
                FunctionName=fn.function_name,
                Description=f"{_version_tag(mv.model, mv.version)} {mv.artifact_uri}"[
                    :LAMBDA_DESCRIPTION_MAX
                ],
                **guard,
            )
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailedException", "ResourceConflictException"):
                raise ConflictError(
                    f"{fn.function_name} changed while deploying {mv.model} v{mv.version} "
                    f"({_message(exc)}); deploy again"
                ) from exc
            raise
        served = (published.get("Environment") or {}).get("Variables")
        if served is not None and served.get(ENV_MODEL_URI) != mv.artifact_uri:
            raise ConflictError(
                f"{fn.function_name} version {published['Version']} serves "
                f"{served.get(ENV_MODEL_URI)}, not {mv.artifact_uri}: another deploy interleaved"
            )
        return str(published["Version"])

    def deploy(self, version: ModelVersion, *, canary_weight: float | None = None) -> Deployment:
        if canary_weight is not None and not 0.0 < canary_weight < 1.0:
            raise TandemError(
                f"canary_weight must be between 0 and 1 (exclusive), got {canary_weight}"
            )
        fn = self.function(version.model)
        alias = self._alias(fn)
        current = self._live(version.model, alias)
        if (
            current is not None
            and current.version == version.version
            and current.canary_weight == canary_weight
        ):
            return current
        with tempfile.TemporaryDirectory() as tmp:
            # never point the endpoint at an artifact that is missing or fails its manifest
            self.store.get_artifact(version.artifact_uri, Path(tmp))
        reused = self.published_version(version.model, version.version, version.artifact_uri)
        function_version = reused or self._publish(fn, version)
        details = {
            "function_name": fn.function_name,
            "alias": fn.alias,
            "function_version": function_version,
            "published": "false" if reused else "true",
        }
        if canary_weight is None:
            routing: dict[str, Any] = {"AdditionalVersionWeights": {}}
            primary = function_version
        else:
            # the primary is what the alias serves to most of the traffic now
            primary = str(alias.get("FunctionVersion"))
            if current is None or primary == function_version:
                raise TandemError(
                    f"{version.model} v{version.version}: a canary needs another live version "
                    "of the model to keep as the primary; deploy without a canary first"
                )
            routing = {"AdditionalVersionWeights": {function_version: canary_weight}}
            details["primary_function_version"] = primary
            details["primary_model_version"] = str(
                current.details["primary_model_version"]
                if current.canary_weight is not None
                else current.version
            )
        guard = {"RevisionId": alias["RevisionId"]} if alias.get("RevisionId") else {}
        try:
            self.client.update_alias(
                FunctionName=fn.function_name,
                Name=fn.alias,
                FunctionVersion=primary,
                RoutingConfig=routing,
                **guard,
            )
        except ClientError as exc:
            if _code(exc) == "PreconditionFailedException":
                raise ConflictError(
                    f"alias {fn.alias} of {fn.function_name} moved while deploying; deploy again"
                ) from exc
            raise
        deployment = Deployment(
            model=version.model,
            version=version.version,
            artifact_uri=version.artifact_uri,
            endpoint=fn.url,
            deployed_at=now(),
            canary_weight=canary_weight,
            details=details,
        )
        self.log.append(deployment)
        return deployment

    # invoke
    def invoke(
        self, model: str, rows: list[dict[str, Any]], *, route: str | None = None
    ) -> dict[str, Any]:
        """Invoke `model`'s function as its Function URL would (a payload 2.0 POST /predict).

        No route: the alias, which splits the traffic as deployed. "live": the alias's
        primary version; "canary": the canary's version, each by its number."""
        if route is not None and route not in ROUTES:
            raise TandemError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")
        fn = self.function(model)
        alias = self._alias(fn)
        if self._live(model, alias) is None:
            raise NotFoundError(f"model {model!r} is not deployed on stack {self.stack!r}")
        qualifier = fn.alias
        if route == "live":
            qualifier = str(alias["FunctionVersion"])
        elif route == "canary":
            canaries = list(_weights(alias))
            if not canaries:
                raise TandemError(f"no canary is running for {model!r} on stack {self.stack!r}")
            qualifier = canaries[0]
        request_id = str(uuid.uuid4())
        event = url_event(fn.url, json.dumps({"instances": rows}), request_id)
        answer = self.client.invoke(
            FunctionName=fn.function_name, Qualifier=qualifier, Payload=json.dumps(event)
        )
        raw = answer["Payload"].read()
        if answer.get("FunctionError"):
            raise TandemError(f"{fn.function_name}: the function failed: {raw[:500]!r}")
        try:
            response = json.loads(raw)
            body = response.get("body") or ""
            if response.get("isBase64Encoded"):
                body = base64.b64decode(body)
            payload = json.loads(body) if isinstance(body, (str, bytes)) else body
            status = int(response.get("statusCode", 200))
        except (ValueError, TypeError, AttributeError):
            raise TandemError(
                f"{fn.function_name}: not a Function URL answer: {raw[:200]!r}"
            ) from None
        if status == 200 and not (isinstance(payload, dict) and "predictions" in payload):
            raise TandemError(
                f"{fn.function_name} answered 200 without predictions: {json.dumps(payload)[:300]}"
            )
        return answer_or_error(model, status, payload)
