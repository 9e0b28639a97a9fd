"""The rule every role assignment passes before it is made: a scope broader than its role
allows fails the program (at preview), not just a test."""

from __future__ import annotations

import pulumi
import pytest

from infra.azure import roles
from infra.azure.access import Access, Grant, narrowest_scope_problem, resource_type_of
from tests.infra.azure_mocks import SUBSCRIPTION, resource_group_id

RG = resource_group_id("tandem-dev-rg")
ACCOUNT = f"{RG}/providers/Microsoft.Storage/storageAccounts/tandemdevabcdef"
CONTAINER = f"{ACCOUNT}/blobServices/default/containers/models"
SITE = f"{RG}/providers/Microsoft.Web/sites/tandem-dev-credit-abcdef"
SECRET = f"{RG}/providers/Microsoft.KeyVault/vaults/tandem-dev-abcdef/secrets/pseudonym-key"


@pytest.mark.parametrize(
    ("role", "scope", "problem"),
    [
        (roles.STORAGE_BLOB_DATA_READER, CONTAINER, None),
        (roles.STORAGE_BLOB_DATA_CONTRIBUTOR, ACCOUNT, "blob data roles are granted on one"),
        (roles.STORAGE_BLOB_DATA_READER, RG, "broader than a resource"),
        (roles.KEY_VAULT_SECRETS_USER, SECRET, None),
        (roles.WEBSITE_CONTRIBUTOR, SITE, None),
        (roles.CONTRIBUTOR, ACCOUNT, None),
        (roles.CONTRIBUTOR, SITE, "only on a workspace's associated resources"),
        (roles.CONTRIBUTOR, RG, "broader than a resource"),
        (roles.CONTRIBUTOR, f"/subscriptions/{SUBSCRIPTION}", "broader than a resource"),
        (roles.OWNER, SITE, "administers access"),
        (roles.USER_ACCESS_ADMINISTRATOR, CONTAINER, "administers access"),
        (roles.RBAC_ADMINISTRATOR, ACCOUNT, "administers access"),
    ],
)
def test_scope_rule(role, scope, problem):
    found = narrowest_scope_problem(role, scope)
    if problem is None:
        assert found is None, found
    else:
        assert found is not None and problem in found, found


def test_resource_types_of_ids():
    assert resource_type_of(CONTAINER) == (
        "Microsoft.Storage/storageAccounts/blobServices/containers"
    )
    assert resource_type_of(SECRET) == "Microsoft.KeyVault/vaults/secrets"
    assert resource_type_of(RG) == ""
    assert resource_type_of(f"/subscriptions/{SUBSCRIPTION}") == ""


def test_a_grant_at_a_resource_group_fails_the_program():
    @pulumi.runtime.test
    def build():
        access = Access("refusing", SUBSCRIPTION)
        assignment = access.grant(
            Grant("ci", roles.STORAGE_BLOB_DATA_READER, "everything"), "principal", RG
        )
        return assignment.urn

    with pytest.raises(ValueError, match=r"role assignment refused: .* broader than a resource"):
        build()


def test_an_unknown_role_is_refused_before_anything_is_made():
    with pytest.raises(ValueError, match="unknown role 'Global Administrator'"):
        Access("unknown", SUBSCRIPTION).grant(
            Grant("ci", "Global Administrator", "tenant"), "principal", CONTAINER
        )
