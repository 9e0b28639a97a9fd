"""The built-in Azure roles Tandem assigns, by name, each id written once.

Ids from the built-in roles reference (they are the same in every tenant):
https://learn.microsoft.com/en-us/azure/role-based-access-control/built-in-roles
Owner, Contributor at a resource group and User Access Administrator are listed so that
tests can name what must never be assigned; the program assigns only what a grant in
`infra.azure.access` asks for. No Pulumi here.
"""

from __future__ import annotations

STORAGE_BLOB_DATA_READER = "Storage Blob Data Reader"
STORAGE_BLOB_DATA_CONTRIBUTOR = "Storage Blob Data Contributor"
KEY_VAULT_SECRETS_USER = "Key Vault Secrets User"
KEY_VAULT_SECRETS_OFFICER = "Key Vault Secrets Officer"
KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER = "Key Vault Crypto Service Encryption User"
MONITORING_METRICS_PUBLISHER = "Monitoring Metrics Publisher"
AZUREML_DATA_SCIENTIST = "AzureML Data Scientist"
ACR_PULL = "AcrPull"
ACR_PUSH = "AcrPush"
WEBSITE_CONTRIBUTOR = "Website Contributor"
CONTRIBUTOR = "Contributor"
OWNER = "Owner"
USER_ACCESS_ADMINISTRATOR = "User Access Administrator"
RBAC_ADMINISTRATOR = "Role Based Access Control Administrator"

ROLE_IDS = {
    STORAGE_BLOB_DATA_READER: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    STORAGE_BLOB_DATA_CONTRIBUTOR: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    KEY_VAULT_SECRETS_USER: "4633458b-17de-408a-b874-0445c86b69e6",
    KEY_VAULT_SECRETS_OFFICER: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER: "e147488a-f6f5-4113-8e2d-b22465e65bf6",
    MONITORING_METRICS_PUBLISHER: "3913510d-42f4-4e42-8a64-420c390055eb",
    AZUREML_DATA_SCIENTIST: "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    ACR_PULL: "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    ACR_PUSH: "8311e382-0749-4cb8-b61a-304f252e45ec",
    WEBSITE_CONTRIBUTOR: "de139f84-1756-47ae-9be6-808fbbe84772",
    CONTRIBUTOR: "b24988ac-6180-42a0-ab88-20f7382dd24c",
    OWNER: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    USER_ACCESS_ADMINISTRATOR: "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    RBAC_ADMINISTRATOR: "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
}
ROLE_NAMES = {guid: name for name, guid in ROLE_IDS.items()}
# Roles that manage access itself: never assigned by the program, at any scope.
ACCESS_ADMIN_ROLES = (OWNER, USER_ACCESS_ADMINISTRATOR, RBAC_ADMINISTRATOR)


def role_definition_id(subscription_id: str, role: str) -> str:
    """The ARM id of a built-in role, as a role assignment names it."""
    return (
        f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/"
        f"roleDefinitions/{ROLE_IDS[role]}"
    )


def role_of(role_definition_id_: str) -> str:
    """The role name of a role definition id (the id itself if it is not a known role)."""
    guid = role_definition_id_.rstrip("/").rsplit("/", 1)[-1]
    return ROLE_NAMES.get(guid, role_definition_id_)
