"""Azure ML: the registry (no admin user, no anonymous pull), the workspace linked to the
stack's resources through its own identity, the training cluster, the environment."""

from __future__ import annotations

import pulumi

from infra.azure.names import AzureNames


def test_registry_signs_every_pull_and_push_in(prod, staging):
    for built in (prod, staging):
        registry = built.one("containerregistry:Registry").inputs
        assert registry["adminUserEnabled"] is False  # CKV_AZURE_137
        assert registry["anonymousPullEnabled"] is False  # CKV_AZURE_138
        assert registry["registryName"] == AzureNames.of(built.cfg).container_registry


@pulumi.runtime.test
def test_workspace_is_linked_to_the_stacks_resources_through_its_own_identity(prod):
    p = prod.azure
    ws = p.workspace.workspace

    def check(values):
        urn, got, expected = values
        for key, value in expected.items():
            assert got[key] == value, f"{urn}: {key} is {got[key]!r}, expected {value!r}"
        assert list(got["identity"]["user_assigned_identities"]) == [expected["primary"]], urn

    return pulumi.Output.all(
        ws.urn,
        pulumi.Output.all(
            storage=ws.storage_account,
            key_vault=ws.key_vault,
            insights=ws.application_insights,
            registry=ws.container_registry,
            primary=ws.primary_user_assigned_identity,
            identity=ws.identity,
        ),
        pulumi.Output.all(
            storage=p.storage.account.id,
            key_vault=p.key_vault.vault.id,
            insights=p.insights.application_insights.id,
            registry=p.registry.registry.id,
            primary=p.identities.workspace.id,
        ),
    ).apply(check)


def test_workspace_reaches_its_datastores_with_identities_and_is_private_in_prod(prod, staging):
    for built, access in ((prod, "Disabled"), (staging, "Enabled")):
        ws = built.one("machinelearningservices:Workspace").inputs
        where = built.cfg.stack
        assert ws["systemDatastoresAuthMode"] == "identity", where
        assert ws["publicNetworkAccess"] == access, where  # CKV_AZURE_144 in prod
        assert ws["identity"]["type"] == "UserAssigned", where
        assert ws["allowPublicAccessWhenBehindVnet"] is False, where


def test_cluster_scales_from_zero_without_local_auth_as_the_training_identity(prod, staging):
    for built in (prod, staging):
        compute = built.one("machinelearningservices:Compute").inputs
        n, c = AzureNames.of(built.cfg), built.cfg.azure.compute
        props = compute["properties"]
        assert compute["computeName"] == n.compute
        assert props["computeType"] == "AmlCompute"
        assert props["disableLocalAuth"] is True  # CKV_AZURE_142
        inner = props["properties"]
        assert inner["scaleSettings"]["minNodeCount"] == 0  # CKV_AZURE_150
        assert inner["scaleSettings"]["maxNodeCount"] == c.max_nodes
        assert inner["scaleSettings"]["nodeIdleTimeBeforeScaleDown"] == (
            f"PT{c.idle_minutes_before_scale_down}M"
        )
        assert inner["vmSize"] == c.vm_size
        assert inner["remoteLoginPortPublicAccess"] == "Disabled"
        identities = compute["identity"]["userAssignedIdentities"]
        assert len(identities) == 1 and identities[0].endswith(f"/{n.identity('training')}")
    assert (
        staging.one("machinelearningservices:Compute").inputs["properties"]["properties"][
            "scaleSettings"
        ]["maxNodeCount"]
        == 7
    )


def test_environment_names_the_training_image_by_its_tag(staging):
    n = AzureNames.of(staging.cfg)
    tag = staging.cfg.azure.training_image_tag
    version = staging.one("machinelearningservices:EnvironmentVersion").inputs
    assert version["name"] == n.training_environment
    assert version["version"] == tag
    assert version["properties"]["image"] == (
        f"{n.container_registry}.azurecr.io/{n.training_repository}:{tag}"
    )
    assert staging.outputs["training_environment"] == f"azureml:{n.training_environment}:{tag}"
    assert staging.outputs["compute_name"] == n.compute
    assert staging.outputs["workspace_name"] == n.workspace
