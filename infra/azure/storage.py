"""The stack's storage account: Tandem's four containers, each app's deployment package, the
Functions host's own containers, and the lifecycle of what they hold.

Baseline (reference/security-baseline.md, Azure rows): StorageV2, HTTPS only, TLS 1.2 at
least, no anonymous blob access, shared-key authorisation off (Entra ID only, and the portal
defaults to it), no cross-tenant replication, versioning, blob and container soft delete,
infrastructure encryption, and the account key wrapped by the stack's customer-managed key
in Key Vault through a user-assigned identity (CKV2_AZURE_1; a dev stack that waived purge
protection has no such key and stays on Microsoft-managed keys). In prod the network default
is Deny: trusted Azure services, the listed IP ranges and the functions' subnet only.

Lifecycle (`lifecycle_rules`): model artifacts go Cool after ``cool_after_days`` (online, an
endpoint can still load them); replaced and deleted versions go Cool, then Archive; captured
requests go Cool, Archive (if before their end) and are deleted after
``capture_retention_days``, versions and snapshots with them. Archive needs an LRS/GRS
account, hence no ZRS here.
https://learn.microsoft.com/en-us/azure/storage/blobs/lifecycle-management-overview
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import storage

from contract import layout
from infra.azure.names import HOST_CONTAINERS, AzureNames
from infra.common.checks import check_models

ROLES = tuple(layout.AZURE_CONTAINERS)


def _prefixes(container: str, prefixes: tuple[str, ...]) -> list[str]:
    return [f"{container}/{p}" for p in prefixes]


def lifecycle_rules(
    containers: dict[str, str],
    cool_after_days: int,
    archive_after_days: int,
    capture_retention_days: int,
) -> list[dict[str, Any]]:
    """The management policy's rules (the SDK's dict form of ``ManagementPolicyRuleArgs``).
    ``containers``: role -> container name."""
    models, captures = containers["models"], containers["captures"]

    def after_modification(days: int) -> dict[str, int]:
        return {"days_after_modification_greater_than": days}

    def after_creation(days: int) -> dict[str, int]:
        return {"days_after_creation_greater_than": days}

    capture_blobs: dict[str, Any] = {"delete": after_modification(capture_retention_days)}
    if cool_after_days < capture_retention_days:
        capture_blobs["tier_to_cool"] = after_modification(cool_after_days)
    if archive_after_days < capture_retention_days:
        capture_blobs["tier_to_archive"] = after_modification(archive_after_days)
    expire = {"delete": after_creation(capture_retention_days)}

    def rule(rule_name: str, prefixes: list[str], actions: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": rule_name,
            "enabled": True,
            "type": "Lifecycle",
            "definition": {
                "filters": {"blob_types": ["blockBlob"], "prefix_match": prefixes},
                "actions": actions,
            },
        }

    return [
        rule(
            "model-artifacts-to-cool",
            _prefixes(models, (layout.ARTIFACTS,)),
            {"base_blob": {"tier_to_cool": after_modification(cool_after_days)}},
        ),
        rule(
            "old-model-versions-to-cool-then-archive",
            [f"{models}/"],
            {
                "version": {
                    "tier_to_cool": after_creation(cool_after_days),
                    "tier_to_archive": after_creation(archive_after_days),
                }
            },
        ),
        rule(
            "captures-expire",
            _prefixes(captures, layout.AZURE_CONTAINERS["captures"]),
            {"base_blob": capture_blobs, "version": expire, "snapshot": expire},
        ),
    ]


@dataclass
class StorageArgs:
    """Inputs of the storage component.

    encryption_identity_id: the user-assigned identity that unwraps ``key_name``.
    key_vault_uri, key_name: the customer-managed key (all three None: Microsoft-managed).
    default_deny: network default action Deny (prod).
    models: one deployment package container per model's function app.
    redundancy: ``Standard_LRS`` or ``Standard_GRS`` (both support the Archive tier).
    """

    names: AzureNames
    resource_group_name: Input[str]
    location: str
    models: list[str]
    encryption_identity_id: Input[str] | None = None
    key_vault_uri: Input[str] | None = None
    key_name: Input[str] | None = None
    default_deny: bool = False
    allowed_ip_ranges: list[str] = field(default_factory=list)
    subnet_ids: list[str] = field(default_factory=list)
    redundancy: str = "Standard_GRS"
    soft_delete_days: int = 14
    cool_after_days: int = 30
    archive_after_days: int = 180
    capture_retention_days: int = 90
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        check_models("Storage", self.models)
        cmk = (self.encryption_identity_id, self.key_vault_uri, self.key_name)
        if any(v is None for v in cmk) and any(v is not None for v in cmk):
            raise ValueError(
                "Storage: encryption_identity_id, key_vault_uri and key_name go together"
            )
        if self.redundancy not in ("Standard_LRS", "Standard_GRS", "Standard_RAGRS"):
            raise ValueError(f"Storage: redundancy {self.redundancy!r} has no Archive tier")
        if not self.archive_after_days > self.cool_after_days >= 1:
            raise ValueError("Storage: need archive_after_days > cool_after_days >= 1")


class Storage(pulumi.ComponentResource):
    """``account``, ``blob_service``, ``containers`` (role -> container),
    ``package_containers`` (model -> container), ``host_containers`` (name -> container),
    ``lifecycle``; ``blob_endpoint`` is ``https://<account>.blob.core.windows.net`` (no
    trailing slash)."""

    account: storage.StorageAccount
    blob_service: storage.BlobServiceProperties
    containers: dict[str, storage.BlobContainer]
    package_containers: dict[str, storage.BlobContainer]
    host_containers: dict[str, storage.BlobContainer]
    lifecycle: storage.ManagementPolicy
    blob_endpoint: Output[str]

    def __init__(self, name: str, args: StorageArgs, opts: ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("tandem:azure:Storage", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        names = args.names
        cmk = args.key_name is not None

        self.account = storage.StorageAccount(
            f"{name}-account",
            account_name=names.storage_account,
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind="StorageV2",
            sku=storage.SkuArgs(name=args.redundancy),
            access_tier="Hot",
            enable_https_traffic_only=True,
            minimum_tls_version="TLS1_2",
            allow_blob_public_access=False,
            allow_shared_key_access=False,
            default_to_o_auth_authentication=True,
            allow_cross_tenant_replication=False,
            is_hns_enabled=False,
            public_network_access="Enabled",
            network_rule_set=storage.NetworkRuleSetArgs(
                default_action="Deny" if args.default_deny else "Allow",
                bypass="AzureServices",
                ip_rules=[
                    storage.IPRuleArgs(i_p_address_or_range=r, action="Allow")
                    for r in args.allowed_ip_ranges
                ],
                virtual_network_rules=[
                    storage.VirtualNetworkRuleArgs(virtual_network_resource_id=s, action="Allow")
                    for s in args.subnet_ids
                ],
            ),
            identity=(
                storage.IdentityArgs(
                    type="UserAssigned", user_assigned_identities=[args.encryption_identity_id]
                )
                if cmk
                else None
            ),
            encryption=storage.EncryptionArgs(
                key_source="Microsoft.Keyvault" if cmk else "Microsoft.Storage",
                require_infrastructure_encryption=True,
                services=storage.EncryptionServicesArgs(
                    blob=storage.EncryptionServiceArgs(enabled=True, key_type="Account"),
                    file=storage.EncryptionServiceArgs(enabled=True, key_type="Account"),
                ),
                # No key version: the account follows the key's rotation.
                key_vault_properties=(
                    storage.KeyVaultPropertiesArgs(
                        key_name=args.key_name, key_vault_uri=args.key_vault_uri
                    )
                    if cmk
                    else None
                ),
                encryption_identity=(
                    storage.EncryptionIdentityArgs(
                        encryption_user_assigned_identity=args.encryption_identity_id
                    )
                    if cmk
                    else None
                ),
            ),
            tags=args.tags,
            opts=child_opts,
        )
        account_name = self.account.name
        in_account = ResourceOptions.merge(child_opts, ResourceOptions(parent=self.account))
        self.blob_endpoint = self.account.primary_endpoints.apply(lambda e: e.blob.rstrip("/"))

        retention = storage.DeleteRetentionPolicyArgs(enabled=True, days=args.soft_delete_days)
        self.blob_service = storage.BlobServiceProperties(
            f"{name}-blob-service",
            account_name=account_name,
            resource_group_name=args.resource_group_name,
            blob_services_name="default",
            is_versioning_enabled=True,
            delete_retention_policy=retention,
            container_delete_retention_policy=retention,
            opts=in_account,
        )

        def container(logical: str, container_name: str) -> storage.BlobContainer:
            return storage.BlobContainer(
                f"{name}-{logical}",
                container_name=container_name,
                account_name=account_name,
                resource_group_name=args.resource_group_name,
                public_access="None",
                opts=in_account,
            )

        self.containers = {role: container(role, names.container(role)) for role in ROLES}
        self.package_containers = {
            model: container(f"package-{model}", names.package_container(model))
            for model in args.models
        }
        # Created here so each app's identity is granted these two, not the whole account.
        self.host_containers = {c: container(c, c) for c in HOST_CONTAINERS}

        rules = lifecycle_rules(
            {role: names.container(role) for role in ROLES},
            args.cool_after_days,
            args.archive_after_days,
            args.capture_retention_days,
        )
        self.lifecycle = storage.ManagementPolicy(
            f"{name}-lifecycle",
            account_name=account_name,
            resource_group_name=args.resource_group_name,
            management_policy_name="default",  # the only name ARM accepts
            policy={"rules": rules},
            opts=ResourceOptions.merge(in_account, ResourceOptions(depends_on=[self.blob_service])),
        )
        self.register_outputs({"account": account_name, "blob_endpoint": self.blob_endpoint})

    def container_url(self, role: str) -> Output[str]:
        """``https://<account>.blob.core.windows.net/<container>`` of a store role."""
        return Output.concat(self.blob_endpoint, "/", self.containers[role].name)
