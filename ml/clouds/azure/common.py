"""What every part of the Azure adapter shares: the stack outputs, credentials, errors.

`AzureOutputs` checks the stack outputs once (the keys are `contract.outputs.AZURE`);
`credential` is what every call authenticates with; `management_base` is where Azure
Resource Manager, Azure ML, Key Vault and Azure Monitor calls go; `translate_errors` turns
what azure-core raises into Tandem's one-line errors at every public method.

Emulators: `endpoint_url` (never exported by a program) sends the Blob client to Azurite,
which authenticates with its documented, public development account key; `management_url`
sends every other call to one address (a loopback fake in the tests), authenticated with a
placeholder token. In the cloud both are absent and `DefaultAzureCredential` signs in.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from contract.emulators import AZURITE_ACCOUNT, AZURITE_KEY  # noqa: F401 (store.py reads them here)
from contract.layout import AZURE_CONTAINERS
from contract.outputs import AZURE, AZURE_ENDPOINT_KEYS, ENDPOINT_URL, MANAGEMENT_URL
from ml.clouds.translation import translating
from ml.errors import ConfigError, ConflictError, NotFoundError, TandemError

ARM_URL = "https://management.azure.com"


# -- outputs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionApp:
    """One model's function app: where a deploy writes settings and what a client invokes."""

    function_app: str
    url: str


@dataclass(frozen=True)
class AzureOutputs:
    """The stack outputs the adapter reads (exactly `contract.outputs.AZURE.read`), checked
    once: a missing key is a ConfigError that names it."""

    cloud: str
    stack: str
    location: str
    name_prefix: str
    subscription_id: str
    resource_group: str
    storage_account_url: str
    containers: dict[str, str]  # role (contract.layout.AZURE_CONTAINERS) -> container name
    workspace_name: str
    compute_name: str
    training_identity_client_id: str
    training_environment: str
    endpoints: dict[str, FunctionApp]
    metrics_resource_id: str
    metric_namespace: str
    key_vault_url: str
    pseudonym_secret_name: str
    mlflow_tracking_uri: str | None = None
    endpoint_url: str | None = None  # Azurite's blob endpoint (contract.outputs.ENDPOINT_URL)
    management_url: str | None = None  # a fake of ARM and the rest (MANAGEMENT_URL)

    @classmethod
    def parse(cls, outputs: Mapping[str, Any]) -> AzureOutputs:
        missing = AZURE.missing(outputs)
        if missing:
            raise ConfigError(
                f"azure stack outputs lack {', '.join(map(repr, missing))} "
                f"(have: {', '.join(sorted(outputs)) or 'none'})"
            )
        if outputs["cloud"] != "azure":
            raise ConfigError(f"stack outputs are for cloud {outputs['cloud']!r}, not 'azure'")
        values: dict[str, Any] = {key: str(outputs[key]) for key in AZURE.required}
        values |= {k: (str(outputs[k]) if outputs.get(k) else None) for k in AZURE.optional}
        values["containers"] = _containers(outputs["containers"])
        values["endpoints"] = _endpoints(outputs["endpoints"])
        return cls(
            **values,
            endpoint_url=outputs.get(ENDPOINT_URL) or None,
            management_url=(outputs.get(MANAGEMENT_URL) or "").rstrip("/") or None,
        )

    @property
    def resource_group_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"

    @property
    def management_base(self) -> str:
        """Where ARM and Azure ML calls go: Azure, or the fake named by `management_url`."""
        return self.management_url or ARM_URL


def _decoded(raw: Any) -> Any:
    if isinstance(raw, str):  # a config value may arrive JSON-encoded
        with contextlib.suppress(ValueError):
            return json.loads(raw)
    return raw


def _containers(raw: Any) -> dict[str, str]:
    raw = _decoded(raw)
    roles = tuple(AZURE_CONTAINERS)
    if not isinstance(raw, Mapping) or any(not raw.get(role) for role in roles):
        raise ConfigError(
            f"azure stack output 'containers' must map {', '.join(map(repr, roles))} to "
            f"container names, got {str(raw)[:200]!r}"
        )
    return {role: str(raw[role]) for role in roles}


def _endpoints(raw: Any) -> dict[str, FunctionApp]:
    """The `endpoints` output: {model: {"function_app", "url"}}, checked."""
    raw = _decoded(raw)
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(
            "azure stack output 'endpoints' must map model names to "
            f"{{{', '.join(map(repr, AZURE_ENDPOINT_KEYS))}}}, got {str(raw)[:200]!r}"
        )
    apps = {}
    for model, entry in raw.items():
        lacking = [
            k for k in AZURE_ENDPOINT_KEYS if not (isinstance(entry, Mapping) and entry.get(k))
        ]
        if lacking:
            raise ConfigError(
                f"azure stack output 'endpoints' entry {model!r} lacks {', '.join(lacking)}"
            )
        apps[str(model)] = FunctionApp(**{k: str(entry[k]) for k in AZURE_ENDPOINT_KEYS})
    return apps


# -- what the SDKs say on their own --------------------------------------------------------
# They log to the root handlers, i.e. the stderr of every `tandem` command: azure-ai-ml each
# call's outcome (a lookup that finds nothing at ERROR) and every experimental class it builds,
# azure-identity every credential it tried when none signs in (a dozen lines). Tandem says
# what failed itself, in one line.
SDK_CHATTER = (
    "azure.ai.ml._telemetry",
    "azure.ai.ml._utils._experimental",
    "azure.ai.ml._azure_environments",  # a cloud it cannot load: Tandem names it (arm.py)
    "azure.identity",
)


def quiet_sdk_chatter() -> None:
    for name in SDK_CHATTER:
        logging.getLogger(name).setLevel(logging.CRITICAL)


# -- credentials ---------------------------------------------------------------------------
class PlaceholderCredential:
    """A TokenCredential for a fake of Azure's services (`management_url`): the fake checks
    that a bearer token is sent, not who it belongs to."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(f"placeholder-token-for:{' '.join(scopes)}", int(time.time()) + 3600)


def credential(cfg: AzureOutputs) -> TokenCredential:
    """DefaultAzureCredential in the cloud (managed identity, the CLI's sign-in, GitHub
    OIDC), a placeholder when the outputs send every call to a fake."""
    if cfg.management_url:
        return PlaceholderCredential()
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


# -- errors --------------------------------------------------------------------------------
def _reason(exc: AzureError) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # the storage SDK's codes are enums: their wire name
    message = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    first = str(message).strip().splitlines()[0] if str(message).strip() else type(exc).__name__
    reason = f"{code}: {first}" if code else first
    request = _request(exc)
    return f"{reason}; {request}" if request else reason


def _request(exc: AzureError) -> str:
    """`METHOD URL` of the request that failed, without its query: a SAS token is a secret."""
    request = getattr(getattr(exc, "response", None), "request", None)
    if request is None:
        return ""
    parts = urlsplit(str(request.url))
    return f"{request.method} {urlunsplit((parts.scheme, parts.netloc, parts.path, '', ''))}"


def _missing_container(exc: AzureError) -> str | None:
    """The container a ContainerNotFound error is about, else None."""
    if getattr(exc, "error_code", None) != "ContainerNotFound":
        return None
    request = getattr(getattr(exc, "response", None), "request", None)
    parts = urlsplit(str(getattr(request, "url", "")))
    segments = [s for s in parts.path.split("/") if s]
    # an emulator's address (an IP or localhost) carries the account first in the path
    path_style = parts.hostname == "localhost" or _is_ip(parts.hostname or "")
    segments = segments[1:] if path_style else segments
    return unquote(segments[0]) if segments else "?"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def translated(exc: AzureError) -> TandemError:
    """One line that says what failed and why, for an error azure-core raised."""
    container = _missing_container(exc)
    if container is not None:
        return ConfigError(
            f"Azure: blob container {container!r} does not exist ({_reason(exc)}): is the "
            "stack deployed, and do its `containers` outputs name its containers?"
        )
    if isinstance(exc, ResourceNotFoundError):
        return NotFoundError(f"Azure: not found ({_reason(exc)})")
    if isinstance(exc, ResourceExistsError | ResourceModifiedError):
        return ConflictError(f"Azure: changed by someone else ({_reason(exc)})")
    if isinstance(exc, ClientAuthenticationError):
        return ConfigError(
            f"Azure: not signed in or not allowed ({_reason(exc)}): run `az login`, or give "
            "this identity its role on the stack"
        )
    if isinstance(exc, HttpResponseError) and exc.status_code == 403:
        return TandemError(f"Azure: access denied ({_reason(exc)})")
    if isinstance(exc, ServiceRequestError):
        return TandemError(f"cannot reach Azure: {_reason(exc)}")
    return TandemError(f"Azure call failed: {_reason(exc)}")


# Every public method raises Tandem's errors, never azure-core's.
translate_errors = translating((AzureError,), translated)
