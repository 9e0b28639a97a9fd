"""Azure RBAC as data, for the least-privilege test: the built-in roles Tandem can assign with
their permissions as Microsoft publishes them, Azure's rules for matching an action against
a role, and the action each request of the Azure adapter needs.

Roles: https://learn.microsoft.com/en-us/azure/role-based-access-control/built-in-roles and its
per-category pages (built-in-roles/storage, /security, /monitor, /ai-machine-learning,
/web-and-mobile, /containers, /privileged), read in their source, MicrosoftDocs/azure-docs
articles/role-based-access-control/built-in-roles/*.md (the versions dated 2024-04 to 2026-07).
Every role below was read there except as its comment says.

Matching (https://learn.microsoft.com/en-us/azure/role-based-access-control/role-definitions):
an action string is case-insensitive and `*` stands for any characters, `/` included
(`Microsoft.CostManagement/exports/*` grants `.../exports/read` and `.../exports/run/action`,
`*/read` every provider's reads); a role grants what its Actions match less what its
NotActions match, and its DataActions less its NotDataActions; control-plane actions are
matched against Actions only, data actions against DataActions only. A `/*/` also matches a
single `/`: AzureML Data Scientist grants `workspaces/*/write` and excludes `workspaces/write`
by NotActions, which would exclude nothing otherwise (so its `workspaces/*/read` grants
`workspaces/read`). Microsoft's pages show no example of that case: this is the role's own
evidence, not a quoted rule.

Requests to actions: the Blob operations' actions are the table "Permissions for calling data
operations" (https://learn.microsoft.com/en-us/rest/api/storageservices/authorize-with-azure-
active-directory); Azure ML's, Microsoft.Web's, Key Vault's and Azure Monitor's are the
resource provider operations (https://learn.microsoft.com/en-us/azure/role-based-access-control/
permissions/ai-machine-learning, /web-and-mobile, /security, /monitor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from infra.azure import roles
from tests.azure_fakes import AzureFake

Resource = Literal["workspace", "function-app", "metrics", "secret", "container"]


@dataclass(frozen=True)
class Action:
    """An RBAC operation: control plane (`data` False) or data plane."""

    name: str
    data: bool = False

    def __str__(self) -> str:
        return f"{self.name} (data action)" if self.data else self.name


@dataclass(frozen=True)
class Permissions:
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()

    def allows(self, action: Action) -> bool:
        granted, excluded = (
            (self.data_actions, self.not_data_actions)
            if action.data
            else (self.actions, self.not_actions)
        )
        return any(matches(p, action.name) for p in granted) and not any(
            matches(p, action.name) for p in excluded
        )


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    # "/*/" may also stand for one "/" (see the module doc); any other "*", any characters
    segments = [".*".join(map(re.escape, part.split("*"))) for part in pattern.split("/*/")]
    return re.compile("/(?:.*/)?".join(segments), re.IGNORECASE)


def matches(pattern: str, action: str) -> bool:
    """Whether an Actions/DataActions entry covers `action` (see the module doc)."""
    return _pattern(pattern).fullmatch(action) is not None


BLOB = "Microsoft.Storage/storageAccounts/blobServices"
ML = "Microsoft.MachineLearningServices/workspaces"
ALERT_AND_DEPLOY = (
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
)
KEY_VAULT_READS = (
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
)

BUILT_IN: dict[str, Permissions] = {
    # built-in-roles/storage
    roles.STORAGE_BLOB_DATA_READER: Permissions(
        actions=(f"{BLOB}/containers/read", f"{BLOB}/generateUserDelegationKey/action"),
        data_actions=(f"{BLOB}/containers/blobs/read",),
    ),
    roles.STORAGE_BLOB_DATA_CONTRIBUTOR: Permissions(
        actions=(
            f"{BLOB}/containers/delete",
            f"{BLOB}/containers/read",
            f"{BLOB}/containers/write",
            f"{BLOB}/generateUserDelegationKey/action",
        ),
        data_actions=(
            f"{BLOB}/containers/blobs/delete",
            f"{BLOB}/containers/blobs/read",
            f"{BLOB}/containers/blobs/write",
            f"{BLOB}/containers/blobs/move/action",
            f"{BLOB}/containers/blobs/add/action",
        ),
    ),
    # built-in-roles/security
    roles.KEY_VAULT_SECRETS_USER: Permissions(
        data_actions=(
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ),
    ),
    roles.KEY_VAULT_SECRETS_OFFICER: Permissions(
        actions=(*ALERT_AND_DEPLOY, *KEY_VAULT_READS),
        data_actions=("Microsoft.KeyVault/vaults/secrets/*",),
    ),
    roles.KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER: Permissions(
        actions=(
            "Microsoft.EventGrid/eventSubscriptions/write",
            "Microsoft.EventGrid/eventSubscriptions/read",
            "Microsoft.EventGrid/eventSubscriptions/delete",
        ),
        data_actions=(
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
        ),
    ),
    # built-in-roles/monitor
    roles.MONITORING_METRICS_PUBLISHER: Permissions(
        actions=(
            "Microsoft.Insights/Register/Action",
            "Microsoft.Support/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ),
        data_actions=("Microsoft.Insights/Metrics/Write", "Microsoft.Insights/Telemetry/Write"),
    ),
    # built-in-roles/ai-machine-learning
    roles.AZUREML_DATA_SCIENTIST: Permissions(
        actions=(f"{ML}/*/read", f"{ML}/*/action", f"{ML}/*/delete", f"{ML}/*/write"),
        not_actions=(
            f"{ML}/delete",
            f"{ML}/write",
            f"{ML}/computes/*/write",
            f"{ML}/computes/*/delete",
            f"{ML}/computes/listKeys/action",
            f"{ML}/listKeys/action",
            f"{ML}/hubs/write",
            f"{ML}/hubs/delete",
            f"{ML}/featurestores/write",
            f"{ML}/featurestores/delete",
        ),
    ),
    # built-in-roles/containers
    roles.ACR_PULL: Permissions(actions=("Microsoft.ContainerRegistry/registries/pull/read",)),
    roles.ACR_PUSH: Permissions(
        actions=(
            "Microsoft.ContainerRegistry/registries/pull/read",
            "Microsoft.ContainerRegistry/registries/push/write",
        )
    ),
    # built-in-roles/web-and-mobile
    roles.WEBSITE_CONTRIBUTOR: Permissions(
        actions=(
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Insights/components/*",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
            "Microsoft.Web/certificates/*",
            "Microsoft.Web/listSitesAssignedToHostName/read",
            "Microsoft.Web/serverFarms/join/action",
            "Microsoft.Web/serverFarms/read",
            "Microsoft.Web/sites/*",
        )
    ),
    # built-in-roles/privileged
    roles.CONTRIBUTOR: Permissions(
        actions=("*",),
        not_actions=(
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
            "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
            "Microsoft.Subscription/cancel/action",
            "Microsoft.Subscription/enable/action",
        ),
    ),
    roles.OWNER: Permissions(actions=("*",)),
    roles.USER_ACCESS_ADMINISTRATOR: Permissions(
        actions=("*/read", "Microsoft.Authorization/*", "Microsoft.Support/*")
    ),
    roles.RBAC_ADMINISTRATOR: Permissions(
        actions=(
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "*/read",
            "Microsoft.Support/*",
        )
    ),
}


def allows(role: str, action: Action) -> bool:
    return BUILT_IN[role].allows(action)


# -- what each request needs ---------------------------------------------------------------
@dataclass(frozen=True)
class Needed:
    """The action a request needs and the resource it addresses: `kind` and `key` (a
    container's name, a function app's name, a secret's name, a metrics resource's id, or ''
    for the workspace); None action for a request Azure does not authorise with RBAC."""

    action: Action | None
    kind: Resource | None
    key: str = ""


WS, SITE = AzureFake.WS, AzureFake.SITE
# Resource provider operations, permissions/ai-machine-learning (the codes/versions names follow
# the models/versions ones there; not read verbatim), /web-and-mobile, /security, /monitor.
_MANAGEMENT: dict[tuple[str, str], tuple[str, bool, Resource | None]] = {
    ("GET", WS): (f"{ML}/read", False, "workspace"),
    ("GET", f"{WS}/models"): (f"{ML}/models/read", False, "workspace"),
    ("GET", f"{WS}/models/{{name}}"): (f"{ML}/models/read", False, "workspace"),
    ("GET", f"{WS}/models/{{name}}/versions"): (f"{ML}/models/versions/read", False, "workspace"),
    ("GET", f"{WS}/models/{{name}}/versions/{{version}}"): (
        f"{ML}/models/versions/read", False, "workspace",
    ),
    ("PUT", f"{WS}/models/{{name}}/versions/{{version}}"): (
        f"{ML}/models/versions/write", False, "workspace",
    ),
    ("GET", f"{WS}/codes/{{name}}/versions/{{version}}"): (
        f"{ML}/codes/versions/read", False, "workspace",
    ),
    ("PUT", f"{WS}/codes/{{name}}/versions/{{version}}"): (
        f"{ML}/codes/versions/write", False, "workspace",
    ),
    ("GET", f"{WS}/environments/{{name}}/versions/{{version}}"): (
        f"{ML}/environments/versions/read", False, "workspace",
    ),
    ("PUT", f"{WS}/jobs/{{name}}"): (f"{ML}/jobs/write", False, "workspace"),
    ("GET", f"{WS}/jobs/{{name}}"): (f"{ML}/jobs/read", False, "workspace"),
    ("POST", f"{WS}/jobs/{{name}}/cancel"): (f"{ML}/jobs/cancel/action", False, "workspace"),
    # the run history (Azure ML's own service, authorised against the workspace)
    ("GET", f"/history/v1.0{WS}/runs/{{run}}/details"): (
        f"{ML}/experiments/runs/read", False, "workspace",
    ),
    ("GET", "/discovery"): ("", False, None),  # anonymous: the workspace's service addresses
    ("POST", f"{SITE}/config/appsettings/list"): (
        "Microsoft.Web/sites/config/list/action", False, "function-app",
    ),
    ("PUT", f"{SITE}/config/appsettings"): ("Microsoft.Web/sites/config/write", False,
                                            "function-app"),
    ("POST", f"{SITE}/host/default/listkeys"): (
        "Microsoft.Web/sites/host/listkeys/action", False, "function-app",
    ),
    ("POST", "{resource_id}/metrics"): ("Microsoft.Insights/Metrics/Write", True, "metrics"),
    ("GET", "/secrets/{name}/versions"): (
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action", True, "secret",
    ),
    ("GET", "/secrets/{name}"): ("Microsoft.KeyVault/vaults/secrets/getSecret/action", True,
                                 "secret"),
    ("GET", "/secrets/{name}/{version}"): (
        "Microsoft.KeyVault/vaults/secrets/getSecret/action", True, "secret",
    ),
    ("PUT", "/secrets/{name}"): ("Microsoft.KeyVault/vaults/secrets/setSecret/action", True,
                                 "secret"),
}  # fmt: skip


def management_needs(method: str, template: str, params: dict[str, str]) -> Needed:
    """What a request the fake answered needs (its method and route template and the values
    the template's fields took)."""
    try:
        name, data, kind = _MANAGEMENT[(method, template)]
    except KeyError:
        raise KeyError(f"{method} {template}: no RBAC action known for this request") from None
    if kind is None:
        return Needed(None, None)
    key = {
        "workspace": "",
        "function-app": params.get("app", ""),
        "metrics": params.get("resource_id", ""),
        "secret": params.get("name", ""),
    }[kind]
    return Needed(Action(name, data), kind, key)


def blob_needs(method: str, url: str) -> Needed:
    """What a Blob request needs, from its method and its path-style (Azurite) URL:
    `/<account>/<container>[/<blob>]?<query>` (Permissions for calling data operations)."""
    parts = urlsplit(url)
    segments = unquote(parts.path).lstrip("/").split("/", 2)  # account, container, blob
    container = segments[1] if len(segments) > 1 else ""
    blob = segments[2] if len(segments) > 2 else ""
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    comp, restype = query.get("comp"), query.get("restype")
    if restype == "container" and not blob:
        table = {  # Create/Get Container Properties, Set/Get Metadata, Lease, List Blobs
            ("PUT", None): (f"{BLOB}/containers/write", False),
            ("GET", None): (f"{BLOB}/containers/read", False),
            ("HEAD", None): (f"{BLOB}/containers/read", False),
            ("DELETE", None): (f"{BLOB}/containers/delete", False),
            ("GET", "metadata"): (f"{BLOB}/containers/read", False),
            ("PUT", "metadata"): (f"{BLOB}/containers/write", False),
            ("PUT", "lease"): (f"{BLOB}/containers/write", False),
            ("GET", "list"): (f"{BLOB}/containers/blobs/read", True),
        }
    elif blob:
        # Put Blob: `write` creates or replaces (`add/action` only creates): the one that
        # covers what the SDK may do; Put Block, Put Block List, Lease, Set Metadata: write.
        write = (f"{BLOB}/containers/blobs/write", True)
        read = (f"{BLOB}/containers/blobs/read", True)
        table = {
            ("GET", None): read,
            ("HEAD", None): read,
            ("GET", "metadata"): read,
            ("GET", "blocklist"): read,
            ("PUT", None): write,
            ("PUT", "block"): write,
            ("PUT", "blocklist"): write,
            ("PUT", "lease"): write,
            ("PUT", "metadata"): write,
            ("PUT", "properties"): write,
            ("DELETE", None): (f"{BLOB}/containers/blobs/delete", True),
            ("GET", "tags"): (f"{BLOB}/containers/blobs/tags/read", True),
            ("PUT", "tags"): (f"{BLOB}/containers/blobs/tags/write", True),
        }
    else:
        table = {}
    try:
        name, data = table[(method, comp)]
    except KeyError:
        raise KeyError(f"{method} {parts.path}?{parts.query}: no Blob operation known") from None
    return Needed(Action(name, data), "container", container)
