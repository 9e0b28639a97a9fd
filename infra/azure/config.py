"""The stack config's Azure section, ``tandem:azure``: what only an Azure stack is built from.

    config:
      azure-native:location: westeurope      # where Pulumi's Azure provider reads it
      tandem:azure:
        resource_group: tandem-prod          # default <prefix>-rg, created by the stack
        functions: {instance_memory_mb: 2048, max_instances: 40}
        compute: {vm_size: Standard_DS3_v2, max_nodes: 4}
        network:
          allowed_ip_ranges: [203.0.113.0/24]
          functions_subnet_id: /subscriptions/.../subnets/functions   # required in prod
        key_vault: {purge_protection_waiver: "dev vaults are rebuilt daily"}  # dev only
        storage: {capture_retention_days: 90}
        mlflow: true
        training_image_tag: 2026.11.27-abc123

Every field has a default, so a stack may leave the section out. `location` is not a key of
the section: it is filled from ``azure-native:location``. What involves the environment
(prod needs a functions subnet, only dev may waive purge protection) is checked with the rest
of the stack (`infra.config`). Errors name ``tandem:azure.<key>``. No Pulumi here.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Azure region names as ARM spells them: westeurope, eastus2, switzerlandnorth, ...
LOCATION_RE = re.compile(r"^[a-z]+[a-z0-9]*$")
# Resource group names: 1-90 of letters, digits, '_', '-', '.', '(' and ')', not ending in '.'.
# https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/resource-name-rules
RESOURCE_GROUP_RE = re.compile(r"^[\w\-.()]{0,89}[\w\-()]$")
# A subnet's ARM id; Flex Consumption integrates with a subnet delegated to Microsoft.App/
# environments: https://learn.microsoft.com/en-us/azure/azure-functions/flex-consumption-plan
SUBNET_ID_RE = re.compile(
    r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[\w\-.()]{1,90}/providers/"
    r"Microsoft\.Network/virtualNetworks/[\w\-.]{2,64}/subnets/[\w\-.]{1,80}$"
)
# Azure ML compute VM sizes: Standard_DS3_v2, Standard_NC6s_v3, Standard_E4ds_v5, ...
VM_SIZE_RE = re.compile(r"^Standard_[A-Za-z0-9_]+$")
# The per-stack name suffix (see infra.azure.names): lowercase letters and digits.
NAME_SUFFIX_RE = re.compile(r"^[a-z0-9]{4,6}$")
# Docker's tag grammar, as on AWS: the environment version is the training image's tag.
IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DEFAULT_TRAINING_IMAGE_TAG = "0.1.0"

# Flex Consumption instance sizes and its per-app scale-out limit:
# https://learn.microsoft.com/en-us/azure/azure-functions/flex-consumption-plan
FLEX_INSTANCE_MEMORY_MB = (512, 2048, 4096)
FLEX_MAX_INSTANCES = 1000
# Storage and Key Vault IP rules refuse the private ranges of RFC 1918.
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FunctionsConfig(_Section):
    """Each model's Flex Consumption plan."""

    instance_memory_mb: int = Field(2048, strict=True)
    max_instances: int = Field(40, ge=1, le=FLEX_MAX_INSTANCES, strict=True)

    @field_validator("instance_memory_mb")
    @classmethod
    def _memory(cls, value: int) -> int:
        if value not in FLEX_INSTANCE_MEMORY_MB:
            raise ValueError(f"must be one of {list(FLEX_INSTANCE_MEMORY_MB)} (Flex Consumption)")
        return value


class ComputeConfig(_Section):
    """The Azure ML training cluster: scales from 0 to ``max_nodes``."""

    vm_size: str = "Standard_DS3_v2"
    max_nodes: int = Field(2, ge=1, le=100, strict=True)
    idle_minutes_before_scale_down: int = Field(2, ge=1, le=60, strict=True)

    @field_validator("vm_size")
    @classmethod
    def _vm_size(cls, value: str) -> str:
        if not VM_SIZE_RE.fullmatch(value):
            raise ValueError("must be an Azure VM size such as 'Standard_DS3_v2'")
        return value


class NetworkConfig(_Section):
    """Who reaches the storage account and Key Vault when their network is default-deny (prod),
    and the subnet the function apps integrate with (required in prod)."""

    allowed_ip_ranges: tuple[str, ...] = ()
    functions_subnet_id: str | None = None

    @field_validator("allowed_ip_ranges")
    @classmethod
    def _ranges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Storage firewall rules take public IPv4 addresses or ranges up to /30 only:
        # https://learn.microsoft.com/en-us/azure/storage/common/storage-network-security
        out = []
        for entry in value:
            try:
                net = ipaddress.ip_network(entry, strict=True)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IPv4 address or CIDR range") from None
            if net.version != 4:
                raise ValueError(f"{entry!r}: only IPv4 ranges are accepted by storage rules")
            if (
                any(net.subnet_of(private) for private in _RFC1918)
                or not (
                    net.is_global or net.is_private  # documentation ranges are "private" here
                )
                or net.is_loopback
                or net.is_link_local
                or net.is_multicast
            ):
                raise ValueError(f"{entry!r} is not a public range (storage rules need one)")
            if net.prefixlen < 8:
                raise ValueError(f"{entry!r} is broader than /8: that is no allow-list")
            if net.prefixlen in (31, 32):
                if net.prefixlen == 31:
                    raise ValueError(f"{entry!r}: /31 is not accepted; list the two addresses")
                out.append(str(net.network_address))
            else:
                out.append(str(net))
        if len(set(out)) != len(out):
            raise ValueError("must not repeat a range")
        return tuple(out)

    @field_validator("functions_subnet_id")
    @classmethod
    def _subnet(cls, value: str | None) -> str | None:
        if value is not None and not SUBNET_ID_RE.fullmatch(value):
            raise ValueError(
                "must be a subnet's resource id, /subscriptions/<id>/resourceGroups/<rg>/"
                "providers/Microsoft.Network/virtualNetworks/<vnet>/subnets/<subnet>"
            )
        return value


class KeyVaultConfig(_Section):
    """Purge protection is on unless a dev stack states why not (a dev vault rebuilt under
    the same name would wait out soft delete otherwise). Without it, storage cannot use the
    vault's key (customer-managed keys require purge protection), so such a dev stack
    encrypts with Microsoft-managed keys."""

    purge_protection_waiver: str | None = None
    soft_delete_retention_days: int = Field(90, ge=7, le=90, strict=True)

    @field_validator("purge_protection_waiver")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        if value is not None and len(value.strip()) < 10:
            raise ValueError("must state the reason (at least 10 characters)")
        return value


class StorageConfig(_Section):
    """Soft delete and lifecycle of the stack's blobs.

    Model artifacts move to Cool after ``cool_after_days`` (still online: an endpoint can
    load an old version); replaced or deleted versions move to Cool, then Archive. Captured
    requests move to Cool, to Archive (when that comes before their end) and are deleted
    after ``capture_retention_days``.
    """

    soft_delete_days: int = Field(14, ge=1, le=365, strict=True)
    cool_after_days: int = Field(30, ge=1, le=3650, strict=True)
    archive_after_days: int = Field(180, ge=1, le=3650, strict=True)
    capture_retention_days: int = Field(90, ge=1, le=3650, strict=True)

    @model_validator(mode="after")
    def _order(self) -> StorageConfig:
        if self.archive_after_days <= self.cool_after_days:
            raise ValueError(
                f"archive_after_days ({self.archive_after_days}) must be greater than "
                f"cool_after_days ({self.cool_after_days})"
            )
        return self


class AzureConfig(_Section):
    """``tandem:azure``: the Azure platform's settings."""

    location: str
    resource_group: str | None = None
    name_suffix: str | None = None
    functions: FunctionsConfig = Field(default_factory=FunctionsConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    key_vault: KeyVaultConfig = Field(default_factory=KeyVaultConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    # Export the workspace's MLflow tracking URI, so the lifecycle mirrors runs into it.
    mlflow: bool = Field(False, strict=True)
    # The Azure ML environment's version: the tag of Tandem's training image in the stack's
    # registry (`<prefix>-training`), pushed by CI.
    training_image_tag: str = DEFAULT_TRAINING_IMAGE_TAG

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        if not LOCATION_RE.fullmatch(value):
            raise ValueError("must be an Azure location such as 'westeurope'")
        return value

    @field_validator("resource_group")
    @classmethod
    def _resource_group(cls, value: str | None) -> str | None:
        if value is not None and not RESOURCE_GROUP_RE.fullmatch(value):
            raise ValueError(
                "must be 1-90 letters, digits, '_', '-', '.', '(' or ')', not ending in '.'"
            )
        return value

    @field_validator("name_suffix")
    @classmethod
    def _suffix(cls, value: str | None) -> str | None:
        if value is not None and not NAME_SUFFIX_RE.fullmatch(value):
            raise ValueError("must be 4-6 lowercase letters or digits")
        return value

    @field_validator("training_image_tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not IMAGE_TAG_RE.fullmatch(value) or value == "latest":
            raise ValueError(
                "must be an image tag naming one build: 1-128 letters, digits, '_', '.' or "
                "'-', not starting with '.' or '-', not 'latest'"
            )
        return value

    @property
    def purge_protection(self) -> bool:
        return self.key_vault.purge_protection_waiver is None
