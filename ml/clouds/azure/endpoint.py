"""Serving: FunctionAppEndpoint over each model's own Flex Consumption function app.

A function app is told what to serve by its app settings (contract.serving: the model's URI,
name and version; a canary's URI, version and weight, which the inference core splits traffic
by, Flex Consumption having no deployment slots). A deploy writes them through Azure Resource
Manager, read-modify-write: ARM's PUT of `config/appsettings` replaces the whole set, so every
setting Tandem does not own is written back as it was read, and a lock per app
(`endpoint:<model>`, one app per model) keeps two deploys from interleaving their read and
write. (Not the lifecycle's `model:<name>`, which the caller holds, maybe through another
connection: a lock of the endpoint's own never waits on its caller.)

What is live is read from the app's settings every time, never from a record, so a change made
outside Tandem (the portal, the CLI) is seen. Each deployment is also recorded under
`deployments/<model>/` in the store, which `history` lists (ending with what the app serves).
`invoke` calls the function as a client would: POST {url}/predict with its function key.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest

from contract.serving import (
    ENV_CANARY_URI,
    ENV_CANARY_VERSION,
    ENV_CANARY_WEIGHT,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
    PREDICT_PATH,
    REQUEST_ID_HEADER,
    ROUTE_HEADER,
)
from ml.clouds.answers import answer_or_error
from ml.clouds.azure.arm import ArmRest
from ml.clouds.azure.common import AzureOutputs, FunctionApp, translate_errors
from ml.clouds.base import (
    ArtifactStore,
    Deployment,
    Locks,
    ModelVersion,
    checked_model,
    primary_version,
)
from ml.clouds.records import DeploymentLog, now
from ml.errors import ConfigError, NotFoundError, TandemError

DEPLOYED_AT = "TANDEM_DEPLOYED_AT"  # when Tandem last changed what the app serves
OWNED = (
    ENV_MODEL_URI,
    ENV_MODEL_NAME,
    ENV_MODEL_VERSION,
    ENV_CANARY_URI,
    ENV_CANARY_VERSION,
    ENV_CANARY_WEIGHT,
    DEPLOYED_AT,
)
FUNCTION_KEY_HEADER = "x-functions-key"
ROUTES = ("live", "canary")


def endpoint_lock(model: str) -> str:
    """The lock around the read-modify-write of one model's app settings."""
    return f"endpoint:{model}"


@translate_errors
class FunctionAppEndpoint:
    """EndpointTarget over one function app per model (`endpoints` in the stack outputs)."""

    def __init__(
        self, cfg: AzureOutputs, cred: TokenCredential, store: ArtifactStore, locks: Locks
    ) -> None:
        self.cfg = cfg
        self.arm = ArmRest(cfg, cred)
        self.store = store
        self.locks = locks
        self.log = DeploymentLog(store)
        self._keys: dict[str, str] = {}

    def app(self, model: str) -> FunctionApp:
        """`model`'s function app; ConfigError when the stack has none for it."""
        model = checked_model(model)
        try:
            return self.cfg.endpoints[model]
        except KeyError:
            raise ConfigError(
                f"model {model!r} has no function app on stack {self.cfg.stack!r}: add it to "
                f"tandem:models and run `pulumi up` (endpoints: "
                f"{', '.join(sorted(self.cfg.endpoints)) or 'none'})"
            ) from None

    # -- what the app serves ---------------------------------------------------------------
    def _settings(self, app: FunctionApp) -> dict[str, str]:
        listed = self.arm.web.web_apps.list_application_settings(
            self.cfg.resource_group, app.function_app
        )
        return dict(listed.properties or {})

    def _live(self, model: str, app: FunctionApp, settings: Mapping[str, str]) -> Deployment | None:
        version = settings.get(ENV_MODEL_VERSION, "")
        if not version.isdigit():
            return None
        if settings.get(ENV_MODEL_NAME, model) != model:
            raise ConfigError(
                f"{app.function_app} serves model {settings[ENV_MODEL_NAME]!r}, not {model!r}: "
                f"the stack outputs' endpoints do not match stack {self.cfg.stack!r}"
            )
        details = {"function_app": app.function_app}
        live = {
            "model": model,
            "version": int(version),
            "artifact_uri": settings.get(ENV_MODEL_URI, ""),
            "endpoint": app.url,
            "deployed_at": settings.get(DEPLOYED_AT, ""),
        }
        canary = settings.get(ENV_CANARY_VERSION, "")
        if canary.isdigit() and settings.get(ENV_CANARY_URI):
            details |= {
                "primary_model_version": version,
                "primary_artifact_uri": live["artifact_uri"],
            }
            live |= {
                "version": int(canary),
                "artifact_uri": settings[ENV_CANARY_URI],
                "canary_weight": float(settings.get(ENV_CANARY_WEIGHT) or 0.0),
            }
        return Deployment(**live, details=details)

    def current(self, model: str) -> Deployment | None:
        """What `model`'s app serves, read from its settings."""
        app = self.app(model)
        return self._live(checked_model(model), app, self._settings(app))

    def history(self, model: str) -> list[Deployment]:
        """The recorded deployments, oldest first, ending with what the app serves."""
        model = checked_model(model)
        recorded = self.log.history(model)
        live = self.current(model)
        if live is not None and (not recorded or recorded[-1] != live):
            recorded.append(live)
        return recorded

    # -- deploy ----------------------------------------------------------------------------
    def deploy(self, version: ModelVersion, *, canary_weight: float | None = None) -> Deployment:
        if canary_weight is not None and not 0.0 < canary_weight < 1.0:
            raise TandemError(
                f"canary_weight must be between 0 and 1 (exclusive), got {canary_weight}"
            )
        model = checked_model(version.model)
        app = self.app(model)
        with self.locks.hold(endpoint_lock(model)):
            settings = self._settings(app)
            current = self._live(model, app, settings)
            if (
                current is not None
                and current.version == version.version
                and current.artifact_uri == version.artifact_uri
                and current.canary_weight == canary_weight
            ):
                return current
            with tempfile.TemporaryDirectory() as tmp:
                # never point the app at an artifact that is missing or fails its manifest
                self.store.get_artifact(version.artifact_uri, Path(tmp))
            wanted = {k: v for k, v in settings.items() if k not in OWNED}
            wanted[ENV_MODEL_NAME] = model
            details = {"function_app": app.function_app}
            if canary_weight is None:
                wanted[ENV_MODEL_URI] = version.artifact_uri
                wanted[ENV_MODEL_VERSION] = str(version.version)
            else:
                primary = primary_version(current)
                if current is None or primary == version.version:
                    raise TandemError(
                        f"{model} v{version.version}: a canary needs another live version of "
                        "the model to keep as the primary; deploy without a canary first"
                    )
                primary_uri = settings[ENV_MODEL_URI]
                wanted |= {
                    ENV_MODEL_URI: primary_uri,
                    ENV_MODEL_VERSION: str(primary),
                    ENV_CANARY_URI: version.artifact_uri,
                    ENV_CANARY_VERSION: str(version.version),
                    ENV_CANARY_WEIGHT: repr(float(canary_weight)),
                }
                details |= {
                    "primary_model_version": str(primary),
                    "primary_artifact_uri": primary_uri,
                }
            wanted[DEPLOYED_AT] = now()
            from azure.mgmt.web.models import StringDictionary

            self.arm.web.web_apps.update_application_settings(
                self.cfg.resource_group, app.function_app, StringDictionary(properties=wanted)
            )
            deployment = Deployment(
                model=model,
                version=version.version,
                artifact_uri=version.artifact_uri,
                endpoint=app.url,
                deployed_at=wanted[DEPLOYED_AT],
                canary_weight=canary_weight,
                details=details,
            )
            self.log.append(deployment)
        return deployment

    # -- invoke ----------------------------------------------------------------------------
    def _function_key(self, app: FunctionApp, fresh: bool = False) -> str:
        """The app's default function key (host/default/listkeys), kept until refused."""
        if fresh or app.function_app not in self._keys:
            keys = self.arm.web.web_apps.list_host_keys(self.cfg.resource_group, app.function_app)
            key = (keys.function_keys or {}).get("default")
            if not key:
                raise ConfigError(f"{app.function_app} has no default function key")
            self._keys[app.function_app] = key
        return self._keys[app.function_app]

    def invoke(
        self, model: str, rows: list[dict[str, Any]], *, route: str | None = None
    ) -> dict[str, Any]:
        """POST {url}/predict as a client would, with the function key. No route: the app
        splits the traffic as deployed; "live" or "canary" pins the request."""
        if route is not None and route not in ROUTES:
            raise TandemError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")
        app = self.app(model)
        live = self.current(model)
        if live is None:
            raise NotFoundError(f"model {model!r} is not deployed on stack {self.cfg.stack!r}")
        if route == "canary" and live.canary_weight is None:
            raise TandemError(f"no canary is running for {model!r} on stack {self.cfg.stack!r}")
        headers = {"content-type": "application/json", REQUEST_ID_HEADER: str(uuid.uuid4())}
        if route:
            headers[ROUTE_HEADER] = route
        body = json.dumps({"instances": rows}, allow_nan=False)
        # connection failures are retried; an answer (a 503 while a model loads) is returned
        # as it is: the lifecycle's smoke request has its own deadline and retries
        client = PipelineClient(base_url=app.url, policies=[RetryPolicy(retry_status=0)])
        for fresh in (False, True):  # a key rotated since it was read: read it again, once
            headers[FUNCTION_KEY_HEADER] = self._function_key(app, fresh)
            request = HttpRequest("POST", app.url.rstrip("/") + PREDICT_PATH, headers=headers,
                                  content=body)  # fmt: skip
            response = client.send_request(request)
            if response.status_code != 401:
                break
        try:
            answer = response.json()
        except ValueError:
            answer = {"error": response.text()[:300]}
        if response.status_code == 401:
            raise TandemError(f"{app.function_app} refused its own function key (401)")
        return answer_or_error(model, response.status_code, answer)
