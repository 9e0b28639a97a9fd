"""The Azure Resource Manager clients every other Azure module goes through.

`ml_client` is azure-ai-ml's MLClient for the stack's workspace; `ArmRest` holds
azure-mgmt-web's client for the function apps and a small azure-core pipeline for the few Azure
ML calls azure-ai-ml keeps private (code versions, the workspace's run history). Each is pointed
at `cfg.management_base`: Azure, or the fake that `management_url` names in the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import cached_property
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    map_error,
)
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

from ml.clouds.azure.common import ARM_URL, AzureOutputs
from ml.errors import ConfigError

AZURE_CLOUD = "AzureCloud"
CURRENT_CLOUD = "AZUREML_CURRENT_CLOUD"  # where azure-ai-ml keeps the cloud it was given
# Azure ML's REST API for what azure-ai-ml keeps private (code versions)
# https://learn.microsoft.com/rest/api/azureml/code-versions
ML_API_VERSION = "2024-04-01"
ERRORS = {401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError}


def _cloud_kwargs(cfg: AzureOutputs) -> dict[str, Any]:
    """azure-ai-ml's cloud for `cfg`: Azure's public cloud, or one whose Resource Manager is
    the emulator. The name carries the address: azure-ai-ml keeps clouds in a process-wide
    table that refuses to redefine a name."""
    if not cfg.management_url:
        # named even so: azure-ai-ml otherwise takes AZUREML_CURRENT_CLOUD, which it sets itself
        return {"cloud": AZURE_CLOUD}
    base = cfg.management_base
    name = f"TandemEmulator-{hashlib.sha256(base.encode()).hexdigest()[:12]}"
    return {
        "cloud": name,
        "cloud_metadata": {
            "azure_portal": base,
            "resource_manager": base + "/",
            "active_directory": base,
            "aml_resource_id": base,
            "storage_endpoint": "core.windows.net",
            "registry_discovery_endpoint": base + "/",
        },
    }


def ml_client(cfg: AzureOutputs, cred: TokenCredential) -> Any:
    """azure-ai-ml's MLClient for the stack's workspace (no request is sent here).

    azure-ai-ml writes the cloud it is given into the process environment (CURRENT_CLOUD),
    where every child process would find it: one that imports azure-ai-ml then fails at
    import if the cloud is not one it knows (an emulator's). It is put back as it was, one
    client at a time (threads racing here would put back each other's cloud)."""
    with _MAKING_CLIENT:
        return _ml_client(cfg, cred)


_MAKING_CLIENT = threading.Lock()


def _ml_client(cfg: AzureOutputs, cred: TokenCredential) -> Any:
    before = os.environ.get(CURRENT_CLOUD)
    try:
        from azure.ai.ml import MLClient

        return MLClient(
            cred,
            subscription_id=cfg.subscription_id,
            resource_group_name=cfg.resource_group,
            workspace_name=cfg.workspace_name,
            show_progress=False,
            enable_telemetry=False,
            **_cloud_kwargs(cfg),
        )
    except ImportError:
        raise
    except Exception as exc:  # azure-ai-ml loads its cloud's metadata on import
        raise ConfigError(
            f"azure-ai-ml could not start: {str(exc).splitlines()[0][:300]} "
            f"({CURRENT_CLOUD}={before!r})"
        ) from None
    finally:
        if before is None:
            os.environ.pop(CURRENT_CLOUD, None)
        else:
            os.environ[CURRENT_CLOUD] = before


class ArmRest:
    """Azure Resource Manager for the adapter: `web` (azure-mgmt-web) for the function apps,
    `get`/`put` for Azure ML resources by ARM path, `get_url` for a URL Azure handed out
    (the workspace's discovery and run history)."""

    def __init__(self, cfg: AzureOutputs, cred: TokenCredential) -> None:
        self.cfg = cfg
        self.cred = cred
        self.base = cfg.management_base

    @cached_property
    def web(self) -> Any:
        from azure.mgmt.web import WebSiteManagementClient

        return WebSiteManagementClient(self.cred, self.cfg.subscription_id, base_url=self.base)

    @cached_property
    def _pipeline(self) -> ARMPipelineClient:
        return ARMPipelineClient(
            base_url=self.base,
            policies=[
                RetryPolicy(),
                ARMChallengeAuthenticationPolicy(self.cred, f"{ARM_URL}/.default"),
            ],
        )

    @property
    def workspace_id(self) -> str:
        return (
            f"{self.cfg.resource_group_id}/providers/Microsoft.MachineLearningServices/"
            f"workspaces/{self.cfg.workspace_name}"
        )

    def _send(self, request: HttpRequest) -> dict[str, Any]:
        response = self._pipeline.send_request(request)
        if response.status_code >= 400:
            map_error(response.status_code, response, ERRORS)
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        return response.json() if response.content else {}

    def get(self, path: str, api_version: str = ML_API_VERSION) -> dict[str, Any]:
        """GET an ARM resource by its path (`/subscriptions/...`)."""
        return self._send(HttpRequest("GET", self.base + path, params={"api-version": api_version}))

    def put(self, path: str, body: dict[str, Any], api_version: str = ML_API_VERSION) -> dict:
        """PUT an ARM resource by its path; returns what Azure answers."""
        return self._send(
            HttpRequest(
                "PUT",
                self.base + path,
                params={"api-version": api_version},
                headers={"content-type": "application/json"},
                content=json.dumps(body),
            )
        )

    def get_url(self, url: str) -> dict[str, Any]:
        """GET an absolute URL Azure named (discovery, run history), with the ARM token."""
        return self._send(HttpRequest("GET", url))
