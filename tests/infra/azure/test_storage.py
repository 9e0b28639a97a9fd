"""The storage account: the Azure baseline, Tandem's containers, the customer-managed key,
the network rules per environment, and the lifecycle of models and captures."""

from __future__ import annotations

import pulumi

from contract import layout
from infra.azure.names import HOST_CONTAINERS, AzureNames
from infra.azure.storage import lifecycle_rules


def test_account_meets_the_baseline(prod, dev_waived):
    for built in (prod, dev_waived):
        account = built.one("storage:StorageAccount").inputs
        where = f"{built.cfg.stack}: {account['accountName']}"
        assert account["kind"] == "StorageV2", where
        assert account["enableHttpsTrafficOnly"] is True, where  # CKV_AZURE_3
        assert account["minimumTlsVersion"] == "TLS1_2", where  # CKV_AZURE_44
        assert account["allowBlobPublicAccess"] is False, where  # CKV_AZURE_190
        assert account["allowSharedKeyAccess"] is False, where  # CKV2_AZURE_40
        assert account["defaultToOAuthAuthentication"] is True, where
        assert account["allowCrossTenantReplication"] is False, where
        assert account["encryption"]["requireInfrastructureEncryption"] is True, where
        # Archive needs LRS/GRS: the lifecycle's tiers exist on this account.
        assert account["sku"]["name"] in ("Standard_LRS", "Standard_GRS"), where
        assert account["accountName"] == AzureNames.of(built.cfg).storage_account, where


def test_blob_service_keeps_versions_and_deleted_blobs_and_containers(prod):
    service = prod.one("storage:BlobServiceProperties").inputs
    days = prod.cfg.azure.storage.soft_delete_days
    assert service["blobServicesName"] == "default"
    assert service["isVersioningEnabled"] is True  # CKV2_AZURE_38
    assert service["deleteRetentionPolicy"] == {"enabled": True, "days": days}
    assert service["containerDeleteRetentionPolicy"] == {"enabled": True, "days": days}


def test_containers_are_the_contracts_roles_one_package_per_app_and_the_hosts(prod):
    containers = {r.inputs["containerName"]: r.inputs for r in prod.all("storage:BlobContainer")}
    names = AzureNames.of(prod.cfg)
    expected = {
        *(names.container(role) for role in layout.AZURE_CONTAINERS),
        *(names.package_container(m) for m in prod.cfg.models),
        *HOST_CONTAINERS,
    }
    assert set(containers) == expected
    assert all(c["publicAccess"] == "None" for c in containers.values()), containers
    account = names.storage_account
    assert {c["accountName"] for c in containers.values()} == {account}


@pulumi.runtime.test
def test_prod_encrypts_with_the_vault_key_through_its_own_identity(prod):
    st, kv, ids = prod.azure.storage, prod.azure.key_vault, prod.azure.identities

    def check(values):
        urn, encryption, identity, key_name, vault_uri, identity_id = values
        key = encryption["key_vault_properties"]
        assert encryption["key_source"] == "Microsoft.Keyvault", urn  # CKV2_AZURE_1
        assert (key["key_name"], key["key_vault_uri"]) == (key_name, vault_uri), urn
        # no version: the account follows the key's rotation
        assert key.get("key_version") is None, urn
        assert encryption["encryption_identity"] == {
            "encryption_user_assigned_identity": identity_id
        }, urn
        assert identity["type"] == "UserAssigned", urn
        assert list(identity["user_assigned_identities"]) == [identity_id], urn

    return pulumi.Output.all(
        st.account.urn,
        st.account.encryption,
        st.account.identity,
        kv.storage_key.name,
        kv.vault.properties.vault_uri,
        ids.storage_encryption.id,
    ).apply(check)


def test_a_dev_stack_that_waived_purge_protection_uses_microsoft_managed_keys(dev_waived):
    account = dev_waived.one("storage:StorageAccount").inputs
    assert account["encryption"]["keySource"] == "Microsoft.Storage"
    assert "keyVaultProperties" not in account["encryption"]
    assert "identity" not in account
    assert not dev_waived.all("keyvault:Key"), (
        "no key: the vault cannot serve one without purge protection"
    )
    assert dev_waived.azure.key_vault.storage_key is None


def test_prod_denies_every_network_but_the_allow_list_and_the_functions_subnet(prod):
    rules = prod.one("storage:StorageAccount").inputs["networkRuleSet"]
    network = prod.cfg.azure.network
    assert rules["defaultAction"] == "Deny"  # CKV_AZURE_35
    assert rules["bypass"] == "AzureServices"
    assert [r["iPAddressOrRange"] for r in rules["ipRules"]] == list(network.allowed_ip_ranges)
    assert [r["virtualNetworkResourceId"] for r in rules["virtualNetworkRules"]] == [
        network.functions_subnet_id
    ]


def test_dev_allows_networks_by_default(dev_waived):
    rules = dev_waived.one("storage:StorageAccount").inputs["networkRuleSet"]
    assert rules["defaultAction"] == "Allow"


def test_lifecycle_tiers_old_model_versions_and_expires_captures(prod):
    policy = prod.one("storage:ManagementPolicy").inputs
    assert policy["managementPolicyName"] == "default"
    rules = {r["name"]: r["definition"] for r in policy["policy"]["rules"]}
    s = prod.cfg.azure.storage
    versions = rules["old-model-versions-to-cool-then-archive"]
    assert versions["filters"]["prefixMatch"] == ["models/"]
    assert versions["actions"]["version"] == {
        "tierToCool": {"daysAfterCreationGreaterThan": s.cool_after_days},
        "tierToArchive": {"daysAfterCreationGreaterThan": s.archive_after_days},
    }
    artifacts = rules["model-artifacts-to-cool"]
    assert artifacts["filters"]["prefixMatch"] == [f"models/{layout.ARTIFACTS}"]
    # Artifacts stay online (Cool, never Archive): an endpoint may still load an old one.
    assert set(artifacts["actions"]["baseBlob"]) == {"tierToCool"}
    captures = rules["captures-expire"]
    assert captures["filters"]["prefixMatch"] == [f"captures/{layout.CAPTURES}"]
    blobs = captures["actions"]["baseBlob"]
    assert blobs["delete"] == {"daysAfterModificationGreaterThan": s.capture_retention_days}
    assert blobs["tierToCool"] == {"daysAfterModificationGreaterThan": s.cool_after_days}
    assert blobs["tierToArchive"] == {"daysAfterModificationGreaterThan": s.archive_after_days}
    for kind in ("version", "snapshot"):
        assert captures["actions"][kind] == {
            "delete": {"daysAfterCreationGreaterThan": s.capture_retention_days}
        }


def test_captures_deleted_before_archive_are_never_archived():
    rules = lifecycle_rules(
        {role: role for role in layout.AZURE_CONTAINERS},
        cool_after_days=30,
        archive_after_days=180,
        capture_retention_days=90,
    )
    captures = next(r for r in rules if r["name"] == "captures-expire")
    blobs = captures["definition"]["actions"]["base_blob"]
    assert set(blobs) == {"tier_to_cool", "delete"}, blobs
    short = lifecycle_rules(
        {role: role for role in layout.AZURE_CONTAINERS}, 30, 180, capture_retention_days=7
    )
    blobs = next(r for r in short if r["name"] == "captures-expire")["definition"]["actions"]
    assert set(blobs["base_blob"]) == {"delete"}, blobs
