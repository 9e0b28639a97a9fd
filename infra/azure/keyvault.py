"""The stack's Key Vault, the key that encrypts its storage account, and the pseudonym key.

The vault authorises with Azure RBAC only (no access policies, CIS 8.6), keeps deleted keys
and secrets recoverable (soft delete, CKV_AZURE_42) and cannot be purged before its retention
ends (purge protection, CKV_AZURE_110), unless a dev stack waives it with a reason
(`infra.azure.config.KeyVaultConfig`). In prod its network default is Deny: trusted Azure
services (the storage account unwrapping its key), the listed IP ranges and the functions'
subnet only (CKV_AZURE_109).

The storage key is RSA 3072, wrap/unwrap only, rotated by Key Vault every year; the storage
account follows the newest version (it is configured without a version).

The pseudonym key (`contract.privacy`) is generated here, once: 32 random bytes
(`secrets.token_bytes`), base64 in the secret's value, a Pulumi secret in state. Pulumi never
changes it afterwards (``ignore_changes``): a new key would orphan every pseudonym already
written, so rotating it is a decision, not a side effect of ``pulumi up``. Keys and secrets
carry an expiry (CKV_AZURE_40/41), also set once; Key Vault treats a secret's expiry as
information, a key's new versions get theirs from the rotation policy.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field

import pulumi
from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import keyvault

from contract import privacy
from infra.azure.names import AzureNames

KEY_SIZE = 3072
KEY_ROTATE_AFTER = "P365D"  # ISO 8601, as Key Vault's rotation policy takes it
KEY_EXPIRES_AFTER = "P730D"
KEY_NOTIFY_BEFORE_EXPIRY = "P30D"
INITIAL_EXPIRY_DAYS = 730
# What Pulumi leaves alone once created (see the module docstring).
KEY_IGNORED = ["properties.attributes.expires"]
SECRET_IGNORED = ["properties.value", "properties.attributes.expires"]


def new_pseudonym_key() -> str:
    """A fresh pseudonymisation key, as the secret's value holds it (base64)."""
    return base64.b64encode(secrets.token_bytes(privacy.KEY_BYTES)).decode("ascii")


def expiry_from_now(days: int) -> int:
    """Seconds since the epoch, ``days`` from now (Key Vault's ``exp`` attribute)."""
    return int(time.time()) + days * 86400


@dataclass
class KeyVaultArgs:
    """Inputs of the Key Vault component.

    tenant_id: the tenant whose Entra ID authorises the vault's callers.
    purge_protection: False only for a dev stack that waived it.
    default_deny: network default action Deny (prod).
    allowed_ip_ranges, subnet_ids: what reaches the vault when it denies by default.
    """

    names: AzureNames
    resource_group_name: Input[str]
    location: str
    tenant_id: Input[str]
    purge_protection: bool = True
    soft_delete_retention_days: int = 90
    default_deny: bool = False
    allowed_ip_ranges: list[str] = field(default_factory=list)
    subnet_ids: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not 7 <= self.soft_delete_retention_days <= 90:
            raise ValueError(
                f"KeyVault: soft_delete_retention_days={self.soft_delete_retention_days} "
                "must be 7..90"
            )


class KeyVault(pulumi.ComponentResource):
    """``vault``, ``storage_key`` (None when purge protection is waived: storage then uses
    Microsoft-managed keys) and ``pseudonym_secret``."""

    vault: keyvault.Vault
    storage_key: keyvault.Key | None
    pseudonym_secret: keyvault.Secret

    def __init__(self, name: str, args: KeyVaultArgs, opts: ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("tandem:azure:KeyVault", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        names = args.names

        self.vault = keyvault.Vault(
            f"{name}-vault",
            vault_name=names.key_vault,
            resource_group_name=args.resource_group_name,
            location=args.location,
            properties=keyvault.VaultPropertiesArgs(
                tenant_id=args.tenant_id,
                sku=keyvault.SkuArgs(family="A", name="standard"),
                enable_rbac_authorization=True,
                enable_soft_delete=True,
                soft_delete_retention_in_days=args.soft_delete_retention_days,
                # Key Vault refuses `false` here; a waived vault leaves it unset.
                enable_purge_protection=True if args.purge_protection else None,
                enabled_for_deployment=False,
                enabled_for_disk_encryption=False,
                enabled_for_template_deployment=False,
                public_network_access="Enabled",
                network_acls=keyvault.NetworkRuleSetArgs(
                    default_action="Deny" if args.default_deny else "Allow",
                    bypass="AzureServices",
                    ip_rules=[keyvault.IPRuleArgs(value=r) for r in args.allowed_ip_ranges],
                    virtual_network_rules=[
                        keyvault.VirtualNetworkRuleArgs(id=s) for s in args.subnet_ids
                    ],
                ),
            ),
            tags=args.tags,
            opts=child_opts,
        )
        vault_child = ResourceOptions.merge(child_opts, ResourceOptions(parent=self.vault))

        self.storage_key = None
        if args.purge_protection:
            # Customer-managed keys for storage require a vault with purge protection.
            self.storage_key = keyvault.Key(
                f"{name}-storage-key",
                key_name=names.storage_key,
                vault_name=self.vault.name,
                resource_group_name=args.resource_group_name,
                properties=keyvault.KeyPropertiesArgs(
                    kty="RSA",
                    key_size=KEY_SIZE,
                    key_ops=["wrapKey", "unwrapKey"],
                    attributes=keyvault.KeyAttributesArgs(
                        enabled=True, expires=expiry_from_now(INITIAL_EXPIRY_DAYS)
                    ),
                    rotation_policy=keyvault.RotationPolicyArgs(
                        attributes=keyvault.KeyRotationPolicyAttributesArgs(
                            expiry_time=KEY_EXPIRES_AFTER
                        ),
                        lifetime_actions=[
                            keyvault.LifetimeActionArgs(
                                action=keyvault.ActionArgs(type="rotate"),
                                trigger=keyvault.TriggerArgs(time_after_create=KEY_ROTATE_AFTER),
                            ),
                            keyvault.LifetimeActionArgs(
                                action=keyvault.ActionArgs(type="notify"),
                                trigger=keyvault.TriggerArgs(
                                    time_before_expiry=KEY_NOTIFY_BEFORE_EXPIRY
                                ),
                            ),
                        ],
                    ),
                ),
                tags=args.tags,
                opts=ResourceOptions.merge(
                    vault_child, ResourceOptions(ignore_changes=KEY_IGNORED)
                ),
            )

        self.pseudonym_secret = keyvault.Secret(
            f"{name}-pseudonym-key",
            secret_name=names.pseudonym_secret,
            vault_name=self.vault.name,
            resource_group_name=args.resource_group_name,
            properties=keyvault.SecretPropertiesArgs(
                value=Output.secret(new_pseudonym_key()),
                content_type=privacy.KEY_VAULT_CONTENT_TYPE,
                attributes=keyvault.SecretAttributesArgs(
                    enabled=True, expires=expiry_from_now(INITIAL_EXPIRY_DAYS)
                ),
            ),
            tags={**args.tags, "tandem:secret": "pseudonym-key"},
            opts=ResourceOptions.merge(
                vault_child,
                ResourceOptions(
                    ignore_changes=SECRET_IGNORED, additional_secret_outputs=["properties"]
                ),
            ),
        )
        self.register_outputs(
            {"vault_uri": self.vault.properties.vault_uri, "secret": self.pseudonym_secret.name}
        )
