"""Least privilege on Azure: every role assignment the program makes, listed with its scope,
is exactly the table below; none is broader than one resource, none administers access,
blob data roles stay on one container, and Contributor is only the workspace identity's,
where Azure ML documents it. The identities themselves, and CI's GitHub federation."""

from __future__ import annotations

import re

import pulumi
import pytest

from infra.azure import roles
from infra.azure.identity import ENTRA_TOKEN_EXCHANGE_AUDIENCE, GITHUB_ISSUER
from infra.azure.names import AzureNames
from tests.infra.azure_mocks import resource_group_id
from tests.infra.azure_program import assignments

BROADER_THAN_A_RESOURCE = re.compile(r"^/subscriptions/[^/]+(/resourceGroups/[^/]+)?/?$")
CONTAINER_SCOPE = re.compile(r"/blobServices/default/containers/[a-z0-9-]+$")


def expected_table(built) -> set[tuple[str, str, str]]:
    """The least-privilege table, written out from the names alone (not from the program)."""
    n = AzureNames.of(built.cfg)
    rg = f"{resource_group_id(n.resource_group)}/providers"
    account = f"{rg}/Microsoft.Storage/storageAccounts/{n.storage_account}"
    vault = f"{rg}/Microsoft.KeyVault/vaults/{n.key_vault}"
    registry = f"{rg}/Microsoft.ContainerRegistry/registries/{n.container_registry}"
    metrics = f"{rg}/Microsoft.Insights/components/{n.application_insights}"
    workspace = f"{rg}/Microsoft.MachineLearningServices/workspaces/{n.workspace}"

    def container(name: str) -> str:
        return f"{account}/blobServices/default/containers/{name}"

    reader, contributor = roles.STORAGE_BLOB_DATA_READER, roles.STORAGE_BLOB_DATA_CONTRIBUTOR
    training, ws = n.identity("training"), n.identity("workspace")
    table = {
        (ws, roles.CONTRIBUTOR, account),
        (ws, roles.CONTRIBUTOR, vault),
        (ws, roles.KEY_VAULT_SECRETS_OFFICER, vault),
        (ws, roles.CONTRIBUTOR, registry),
        (ws, roles.CONTRIBUTOR, metrics),
        (training, reader, container("data")),
        (training, contributor, container("models")),
        (training, roles.ACR_PULL, registry),
    }
    if built.cfg.azure.purge_protection:
        table.add(
            (
                n.identity("storage-cmk"),
                roles.KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER,
                f"{vault}/keys/{n.storage_key}",
            )
        )
    for model in built.cfg.models:
        fn = n.function_identity(model)
        table |= {
            (fn, reader, container("models")),
            (fn, contributor, container("captures")),
            (fn, contributor, container(f"{model}-package")),
            (fn, contributor, container("azure-webjobs-hosts")),
            (fn, contributor, container("azure-webjobs-secrets")),
            (fn, roles.MONITORING_METRICS_PUBLISHER, metrics),
        }
    if built.cfg.github_oidc is not None:
        ci = n.identity("ci")
        table |= {
            (ci, contributor, container("data")),
            (ci, contributor, container("models")),
            (ci, contributor, container("reports")),
            (ci, roles.AZUREML_DATA_SCIENTIST, workspace),
            (ci, roles.KEY_VAULT_SECRETS_USER, f"{vault}/secrets/pseudonym-key"),
            (ci, roles.MONITORING_METRICS_PUBLISHER, metrics),
            (ci, roles.ACR_PUSH, registry),
        }
        table |= {
            (ci, roles.WEBSITE_CONTRIBUTOR, f"{rg}/Microsoft.Web/sites/{n.function_app(m)}")
            for m in built.cfg.models
        }
    return table


@pytest.mark.parametrize("stack", ["prod", "staging", "dev"])
def test_every_role_assignment_is_in_the_least_privilege_table(stack, request):
    built = request.getfixturevalue(stack)
    got = assignments(built)
    assert len(got) == len(set(got)), f"{stack}: an assignment is made twice"
    expected = expected_table(built)
    assert set(got) == expected, (
        f"{stack}: unexpected {sorted(set(got) - expected)}, missing {sorted(expected - set(got))}"
    )


@pytest.mark.parametrize("stack", ["prod", "staging", "dev"])
def test_no_assignment_is_broader_than_its_rule(stack, request):
    built = request.getfixturevalue(stack)
    workspace_identity = AzureNames.of(built.cfg).identity("workspace")
    listed = []
    for who, role, scope in assignments(built):
        listed.append(f"{who:28} {role:42} {scope}")
        where = f"{stack}: {who} has {role} on {scope}"
        assert not BROADER_THAN_A_RESOURCE.match(scope), f"{where}: broader than a resource"
        assert role not in (roles.OWNER, roles.USER_ACCESS_ADMINISTRATOR, roles.RBAC_ADMINISTRATOR)
        if role in (roles.STORAGE_BLOB_DATA_READER, roles.STORAGE_BLOB_DATA_CONTRIBUTOR):
            assert CONTAINER_SCOPE.search(scope), f"{where}: blob data beyond one container"
        if role == roles.CONTRIBUTOR:
            assert who == workspace_identity, f"{where}: Contributor is the workspace's only"
    assert listed, f"{stack}: no role assignment at all"


@pulumi.runtime.test
def test_the_access_component_lists_what_it_assigned(prod):
    access = prod.azure.access
    assert len(access.grants) == len(access.assignments) == len(assignments(prod))

    def check(scopes):
        for grant, scope in zip(access.grants, scopes, strict=True):
            if grant.what.startswith("container:"):
                assert scope.endswith(f"/containers/{grant.what.removeprefix('container:')}")
            if grant.what.startswith("secret:"):
                assert scope.endswith(f"/secrets/{grant.what.removeprefix('secret:')}")

    return pulumi.Output.all(*(a.scope for a in access.assignments)).apply(check)


# -- identities ------------------------------------------------------------------------
def test_one_identity_per_job_and_per_model(prod, dev):
    for built, with_ci in ((prod, True), (dev, False)):
        n = AzureNames.of(built.cfg)
        got = {r.inputs["resourceName"] for r in built.all("managedidentity:UserAssignedIdentity")}
        expected = {n.identity(r) for r in ("storage-cmk", "workspace", "training")}
        expected |= {n.function_identity(m) for m in built.cfg.models}
        if with_ci:
            expected.add(n.identity("ci"))
        assert got == expected, built.cfg.stack


@pytest.mark.parametrize(
    ("stack", "subject"),
    [
        ("prod", "repo:example-org/tandem:environment:production"),
        ("staging", "repo:example-org/tandem:ref:refs/heads/main"),
    ],
)
def test_ci_trusts_one_repository_and_one_environment_or_branch(stack, subject, request):
    built = request.getfixturevalue(stack)
    federation = built.one("managedidentity:FederatedIdentityCredential").inputs
    assert federation["issuer"] == GITHUB_ISSUER
    assert federation["subject"] == subject
    assert federation["audiences"] == [ENTRA_TOKEN_EXCHANGE_AUDIENCE]
    assert federation["resourceName"] == AzureNames.of(built.cfg).identity("ci")


def test_no_ci_identity_without_github_oidc(dev):
    assert not dev.all("managedidentity:FederatedIdentityCredential")
    assert dev.outputs["ci_identity_client_id"] == ""
