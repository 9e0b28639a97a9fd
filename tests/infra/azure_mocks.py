"""What Azure Resource Manager would answer for the azure-native resources Tandem creates,
for Pulumi's mocks (routed here by `tests/infra/conftest.py`).

Each resource gets the ARM id Azure would give it (``/subscriptions/<sub>/resourceGroups/
<rg>/providers/<namespace>/<type>/<name>[/<child type>/<name>...]``; scope-based resources,
role assignments and diagnostic settings, hang under their scope), its ``name`` (the id's
last segment), and the computed outputs the program reads: blob endpoint, vault URI, key
and secret URIs, identity principal/client ids, registry login server, Application Insights
connection string, Log Analytics customer id, workspace id and MLflow URI, app host name.

One fix the SDK needs (reference/azure-notes.md): ``identity.userAssignedIdentities`` is a
list of ids on input but a map ``{id: {principalId, clientId}}`` on output; echoing the list
fails output deserialisation, so it is turned into that map.

Calls: ``azure-native:authorization:getClientConfig`` (tenant, subscription, the deployer).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from pulumi.runtime import rpc

SUBSCRIPTION = "00000000-0000-0000-0000-000000000003"
TENANT = "00000000-0000-0000-0000-000000000004"
DEPLOYER_CLIENT_ID = "00000000-0000-0000-0000-000000000001"
DEPLOYER_OBJECT_ID = "00000000-0000-0000-0000-000000000002"
CLIENT_CONFIG_TOKEN = "azure-native:authorization:getClientConfig"

# token -> the ARM path under the resource group ({camelCaseInput} fills in a segment).
_PATHS = {
    "storage:StorageAccount": "Microsoft.Storage/storageAccounts/{accountName}",
    "storage:BlobServiceProperties": (
        "Microsoft.Storage/storageAccounts/{accountName}/blobServices/{blobServicesName}"
    ),
    "storage:BlobContainer": (
        "Microsoft.Storage/storageAccounts/{accountName}/blobServices/default/containers/"
        "{containerName}"
    ),
    "storage:ManagementPolicy": (
        "Microsoft.Storage/storageAccounts/{accountName}/managementPolicies/{managementPolicyName}"
    ),
    "keyvault:Vault": "Microsoft.KeyVault/vaults/{vaultName}",
    "keyvault:Key": "Microsoft.KeyVault/vaults/{vaultName}/keys/{keyName}",
    "keyvault:Secret": "Microsoft.KeyVault/vaults/{vaultName}/secrets/{secretName}",
    "managedidentity:UserAssignedIdentity": (
        "Microsoft.ManagedIdentity/userAssignedIdentities/{resourceName}"
    ),
    "managedidentity:FederatedIdentityCredential": (
        "Microsoft.ManagedIdentity/userAssignedIdentities/{resourceName}/"
        "federatedIdentityCredentials/{federatedIdentityCredentialResourceName}"
    ),
    "operationalinsights:Workspace": "Microsoft.OperationalInsights/workspaces/{workspaceName}",
    "applicationinsights:Component": "Microsoft.Insights/components/{resourceName}",
    "containerregistry:Registry": "Microsoft.ContainerRegistry/registries/{registryName}",
    "machinelearningservices:Workspace": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}"
    ),
    "machinelearningservices:Compute": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}/computes/{computeName}"
    ),
    "machinelearningservices:EnvironmentContainer": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}/environments/{name}"
    ),
    "machinelearningservices:EnvironmentVersion": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}/environments/{name}/"
        "versions/{version}"
    ),
    "web:AppServicePlan": "Microsoft.Web/serverfarms/{name}",
    "web:WebApp": "Microsoft.Web/sites/{name}",
    "web:WebAppFtpAllowed": "Microsoft.Web/sites/{name}/basicPublishingCredentialsPolicies/ftp",
    "web:WebAppScmAllowed": "Microsoft.Web/sites/{name}/basicPublishingCredentialsPolicies/scm",
    "monitor:ActionGroup": "Microsoft.Insights/actionGroups/{actionGroupName}",
    "monitor:MetricAlert": "Microsoft.Insights/metricAlerts/{ruleName}",
}
# token -> (the input holding the scope, the path under it)
_SCOPED = {
    "authorization:RoleAssignment": (
        "scope",
        "providers/Microsoft.Authorization/roleAssignments/{roleAssignmentName}",
    ),
    "monitor:DiagnosticSetting": (
        "resourceUri",
        "providers/Microsoft.Insights/diagnosticSettings/{name}",
    ),
}
_FIELD = re.compile(r"\{(\w+)\}")


def stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def resource_group_id(name: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{name}"


def _fill(template: str, inputs: dict[str, Any], logical: str) -> str:
    # An input left out is one the provider would auto-name: the logical name stands in.
    return _FIELD.sub(lambda m: str(inputs.get(m.group(1)) or logical), template)


def arm_id(token: str, logical: str, inputs: dict[str, Any]) -> str:
    """The ARM id of an azure-native resource (``token`` without ``azure-native:``)."""
    if token == "resources:ResourceGroup":
        return resource_group_id(inputs.get("resourceGroupName") or logical)
    if token in _SCOPED:
        scope_key, template = _SCOPED[token]
        return f"{str(inputs[scope_key]).rstrip('/')}/{_fill(template, inputs, logical)}"
    if token not in _PATHS:
        raise KeyError(f"azure_mocks: no ARM path for azure-native:{token}; add it to _PATHS")
    group = inputs.get("resourceGroupName") or "mock-rg"
    return f"{resource_group_id(group)}/providers/{_fill(_PATHS[token], inputs, logical)}"


def _with(properties: Any, **computed: Any) -> Any:
    """``properties`` plus what Azure computes into it, kept secret if it was sent secret."""
    if rpc.is_rpc_secret(properties):
        return rpc.wrap_rpc_secret({**rpc.unwrap_rpc_secret(properties), **computed})
    return {**(properties or {}), **computed}


def _identity_map(identity: dict[str, Any]) -> dict[str, Any]:
    ids = identity.get("userAssignedIdentities")
    if isinstance(ids, list):
        identity = {
            **identity,
            "userAssignedIdentities": {
                i: {
                    "principalId": stable_uuid("principal", i),
                    "clientId": stable_uuid("client", i),
                }
                for i in ids
            },
        }
    return identity


def _computed(token: str, rid: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    location = inputs.get("location", "westeurope")
    if token == "storage:StorageAccount":
        return {
            "primaryEndpoints": {
                kind: f"https://{name}.{kind}.core.windows.net/"
                for kind in ("blob", "dfs", "file", "queue", "table", "web")
            }
        }
    if token == "keyvault:Vault":
        return {"properties": _with(inputs.get("properties"),
                                    vaultUri=f"https://{name}.vault.azure.net/")}  # fmt: skip
    if token == "keyvault:Key":
        uri = f"https://{inputs['vaultName']}.vault.azure.net/keys/{name}"
        return {"keyUri": uri, "keyUriWithVersion": f"{uri}/{stable_uuid(rid).replace('-', '')}"}
    if token == "keyvault:Secret":
        uri = f"https://{inputs['vaultName']}.vault.azure.net/secrets/{name}"
        return {"properties": _with(inputs.get("properties"), secretUri=uri)}
    if token == "managedidentity:UserAssignedIdentity":
        return {
            "principalId": stable_uuid("principal", rid),
            "clientId": stable_uuid("client", rid),
            "tenantId": TENANT,
        }
    if token == "applicationinsights:Component":
        key = stable_uuid("ikey", rid)
        return {
            "instrumentationKey": key,
            "appId": stable_uuid("app", rid),
            "connectionString": (
                f"InstrumentationKey={key};IngestionEndpoint=https://{location}-1.in."
                f"applicationinsights.azure.com/;ApplicationId={stable_uuid('app', rid)}"
            ),
        }
    if token == "operationalinsights:Workspace":
        return {"customerId": stable_uuid("customer", rid)}
    if token == "containerregistry:Registry":
        return {"loginServer": f"{name}.azurecr.io"}
    if token == "machinelearningservices:Workspace":
        return {
            "workspaceId": stable_uuid("workspace", rid),
            "mlFlowTrackingUri": f"azureml://{location}.api.azureml.ms/mlflow/v1.0{rid}",
        }
    if token == "web:WebApp":
        return {"defaultHostName": f"{name}.azurewebsites.net"}
    return {}


def new_resource(typ: str, logical: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(id, outputs)`` for an azure-native resource: its inputs, its ARM id and name, and
    what Azure computes."""
    token = typ.removeprefix("azure-native:")
    rid = arm_id(token, logical, inputs)
    name = rid.rsplit("/", 1)[-1]
    outputs = {**inputs, "name": name}
    if isinstance(inputs.get("identity"), dict):
        outputs["identity"] = _identity_map(inputs["identity"])
    outputs.update(_computed(token, rid, name, inputs))
    return rid, outputs


def call(token: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """The answer to an azure-native call, or None for a token not answered here."""
    if token == CLIENT_CONFIG_TOKEN:
        return {
            "clientId": DEPLOYER_CLIENT_ID,
            "objectId": DEPLOYER_OBJECT_ID,
            "subscriptionId": SUBSCRIPTION,
            "tenantId": TENANT,
        }
    return None
