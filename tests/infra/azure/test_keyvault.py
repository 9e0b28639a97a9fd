"""The Key Vault: RBAC only, soft delete, purge protection (waivable in dev only), default
deny in prod; the storage key; the pseudonym key generated once and never rotated by
Pulumi."""

from __future__ import annotations

import base64
import time

import pulumi
from pulumi.runtime import rpc

from contract import privacy
from infra.azure import keyvault
from tests.infra.azure_mocks import TENANT


def test_vault_authorises_with_rbac_and_keeps_deleted_items(prod, dev_waived):
    for built in (prod, dev_waived):
        props = built.one("keyvault:Vault").inputs["properties"]
        where = built.cfg.stack
        assert props["enableRbacAuthorization"] is True, where  # CIS 8.6
        assert "accessPolicies" not in props, where
        assert props["enableSoftDelete"] is True, where  # CKV_AZURE_42
        assert props["softDeleteRetentionInDays"] == 90, where
        assert props["tenantId"] == TENANT, where
        for flag in ("enabledForDeployment", "enabledForDiskEncryption",
                     "enabledForTemplateDeployment"):  # fmt: skip
            assert props[flag] is False, (where, flag)


def test_prod_vault_has_purge_protection_and_denies_by_default(prod):
    props = prod.one("keyvault:Vault").inputs["properties"]
    assert props["enablePurgeProtection"] is True  # CKV_AZURE_110
    acls = props["networkAcls"]
    assert acls["defaultAction"] == "Deny"  # CKV_AZURE_109
    assert acls["bypass"] == "AzureServices"  # the storage account unwraps its key
    assert [r["value"] for r in acls["ipRules"]] == list(prod.cfg.azure.network.allowed_ip_ranges)
    assert [r["id"] for r in acls["virtualNetworkRules"]] == [
        prod.cfg.azure.network.functions_subnet_id
    ]


def test_a_waived_dev_vault_leaves_purge_protection_unset(dev_waived):
    props = dev_waived.one("keyvault:Vault").inputs["properties"]
    # Key Vault refuses `false`; unset is how a vault goes without it.
    assert "enablePurgeProtection" not in props
    assert props["networkAcls"]["defaultAction"] == "Allow"


def test_storage_key_is_rotated_wrap_only_rsa_with_an_expiry(prod):
    key = prod.one("keyvault:Key")
    props = key.inputs["properties"]
    assert (props["kty"], props["keySize"]) == ("RSA", 3072)
    assert sorted(props["keyOps"]) == ["unwrapKey", "wrapKey"]
    assert props["attributes"]["expires"] > time.time() + 365 * 86400  # CKV_AZURE_40
    policy = props["rotationPolicy"]
    assert policy["attributes"]["expiryTime"] == keyvault.KEY_EXPIRES_AFTER
    actions = {a["action"]["type"]: a["trigger"] for a in policy["lifetimeActions"]}
    assert actions == {
        "rotate": {"timeAfterCreate": keyvault.KEY_ROTATE_AFTER},
        "notify": {"timeBeforeExpiry": keyvault.KEY_NOTIFY_BEFORE_EXPIRY},
    }
    assert prod.ignored(key) == ["properties.attributes.expires"]


def test_pseudonym_key_is_32_random_bytes_sent_as_a_secret(prod, dev_waived):
    values = []
    for built in (prod, dev_waived):
        secret = built.one("keyvault:Secret")
        assert secret.inputs["secretName"] == "pseudonym-key"
        wrapped = secret.inputs["properties"]
        assert rpc.is_rpc_secret(wrapped), "the value must reach the engine as a secret"
        props = rpc.unwrap_rpc_secret(wrapped)
        key = base64.b64decode(props["value"], validate=True)
        assert len(key) == privacy.KEY_BYTES
        assert props["contentType"] == privacy.KEY_VAULT_CONTENT_TYPE
        assert props["attributes"]["expires"] > time.time()  # CKV_AZURE_41
        values.append(props["value"])
    assert values[0] != values[1], "each stack draws its own key"


def test_pulumi_never_rotates_the_pseudonym_key(prod):
    secret = prod.one("keyvault:Secret")
    assert "properties.value" in prod.ignored(secret)


def test_a_fresh_key_each_time_it_is_drawn():
    drawn = {keyvault.new_pseudonym_key() for _ in range(20)}
    assert len(drawn) == 20
    assert {len(base64.b64decode(k)) for k in drawn} == {privacy.KEY_BYTES}


@pulumi.runtime.test
def test_the_secret_stays_secret_in_outputs(prod):
    secret = prod.azure.key_vault.pseudonym_secret

    def check(values):
        urn, is_secret = values
        assert is_secret, f"{urn}: properties must be a secret output"

    return pulumi.Output.all(secret.urn, pulumi.Output.is_secret(secret.properties)).apply(check)
