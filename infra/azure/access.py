"""Role assignments, each at the narrowest scope that works, and the rule that holds them there.

Every grant names who (a stack identity), what (a built-in role, `infra.azure.roles`) and
where (an ARM resource id). `narrowest_scope_problem` is the rule, applied to each scope as it
resolves, so a grant wired to a resource group or a subscription fails ``pulumi preview``:

- never at a subscription or a resource group, whatever the role;
- never a role that administers access (Owner, User Access Administrator, RBAC Administrator);
- blob data roles only on one container, never on the account;
- Contributor only where Azure ML documents it for a workspace's user-assigned identity (on
  the workspace's storage account, Key Vault, registry and Application Insights).

Assignment names are UUIDs derived from scope, principal and role: the same grant keeps its
name from one deploy to the next (Azure refuses a second assignment of one role to one
principal at one scope under another name).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pulumi
from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import authorization

from infra.azure import roles

# Where Contributor is allowed: Azure ML's documented roles for a workspace's user-assigned
# identity (control plane on each associated resource):
# https://learn.microsoft.com/en-us/azure/machine-learning/how-to-identity-based-service-authentication
CONTRIBUTOR_SCOPE_TYPES = (
    "Microsoft.Storage/storageAccounts",
    "Microsoft.KeyVault/vaults",
    "Microsoft.ContainerRegistry/registries",
    "Microsoft.Insights/components",
)
BLOB_DATA_ROLES = (roles.STORAGE_BLOB_DATA_READER, roles.STORAGE_BLOB_DATA_CONTRIBUTOR)
CONTAINER_SCOPE_MARK = "/blobServices/default/containers/"


def resource_type_of(scope: str) -> str:
    """``Namespace/type[/child type...]`` of an ARM id ('' for a subscription or a group)."""
    parts = scope.strip("/").split("/")
    if "providers" not in parts:
        return ""
    rest = parts[parts.index("providers") + 1 :]
    namespace, pairs = rest[0], rest[1:]
    return "/".join([namespace, *pairs[0::2]])


def narrowest_scope_problem(role: str, scope: str) -> str | None:
    """Why ``role`` must not be assigned at ``scope`` (None when it may)."""
    if role in roles.ACCESS_ADMIN_ROLES:
        return f"{role} administers access and is never assigned"
    kind = resource_type_of(scope)
    if not kind:
        return f"{role} at {scope!r}: a subscription or resource group is broader than a resource"
    if role in BLOB_DATA_ROLES and CONTAINER_SCOPE_MARK not in scope:
        return f"{role} at {scope!r}: blob data roles are granted on one container only"
    if role == roles.CONTRIBUTOR and kind not in CONTRIBUTOR_SCOPE_TYPES:
        return f"Contributor at {scope!r}: only on a workspace's associated resources"
    return None


def _checked(role: str, scope: str) -> str:
    problem = narrowest_scope_problem(role, scope)
    if problem:
        raise ValueError(f"role assignment refused: {problem}")
    return scope


@dataclass(frozen=True)
class Grant:
    """One row of the least-privilege table: ``who`` has ``role`` on ``what``.

    who: the identity's role in the stack ("training", "function:<model>", "ci",
        "workspace", "storage-encryption").
    what: a label for the scope ("container:models", "secret:pseudonym-key", "workspace").
    """

    who: str
    role: str
    what: str


class Access(pulumi.ComponentResource):
    """Every role assignment of the stack, as children, with the table they implement.

    ``grants`` lists the rows in the order they were granted; ``assignments`` the
    ``authorization.RoleAssignment`` of each, in the same order.
    """

    grants: list[Grant]
    assignments: list[authorization.RoleAssignment]

    def __init__(
        self, name: str, subscription_id: Input[str], opts: ResourceOptions | None = None
    ) -> None:
        super().__init__("tandem:azure:Access", name, None, opts)
        self._name = name
        self._subscription_id = Output.from_input(subscription_id)
        self._child_opts = ResourceOptions(parent=self)
        self.grants = []
        self.assignments = []

    def grant(
        self,
        grant: Grant,
        principal_id: Input[str],
        scope: Input[str],
        opts: ResourceOptions | None = None,
    ) -> authorization.RoleAssignment:
        """Assign ``grant.role`` to ``principal_id`` (a managed identity) at ``scope``."""
        if grant.role not in roles.ROLE_IDS:
            raise ValueError(f"Access: unknown role {grant.role!r}")
        checked_scope = Output.from_input(scope).apply(lambda s: _checked(grant.role, s))
        role_id = self._subscription_id.apply(lambda sub: roles.role_definition_id(sub, grant.role))
        assignment_name = Output.all(checked_scope, principal_id, role_id).apply(
            lambda v: str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(v)))
        )
        slug = f"{grant.who}-{grant.role}-{grant.what}".lower().replace(" ", "-").replace(":", "-")
        assignment = authorization.RoleAssignment(
            f"{self._name}-{slug}",
            role_assignment_name=assignment_name,
            principal_id=principal_id,
            # A new identity may not have replicated yet; the type lets ARM accept it.
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=role_id,
            scope=checked_scope,
            description=f"tandem: {grant.who} -> {grant.role} on {grant.what}",
            opts=ResourceOptions.merge(self._child_opts, opts),
        )
        self.grants.append(grant)
        self.assignments.append(assignment)
        return assignment
