"""The stack config's Azure section and Azure's naming limits: every bad value names the
stack and the key; a prefix or model name that cannot fit is a config error; names are
stable per stack and within every limit."""

from __future__ import annotations

import re

import pulumi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract import naming
from infra import config
from infra.azure import names as azure_names
from infra.azure.names import AzureNames, stack_suffix
from infra.config import ConfigError, load
from tests.infra.azure.conftest import SUBNET, stack_file


def base(azure: dict | None = None, **overrides) -> dict:
    raw = {
        "azure-native:location": "westeurope",
        "tandem:clouds": ["azure"],
        "tandem:models": ["churn"],
    }
    raw.update({f"tandem:{k}": v for k, v in overrides.items()})
    if azure is not None:
        raw["tandem:azure"] = azure
    return raw


def prod(azure: dict | None = None, **overrides) -> dict:
    section = {"network": {"functions_subnet_id": SUBNET}, **(azure or {})}
    return base(section, log_retention_days=400, **overrides)


def test_defaults_need_only_a_location():
    cfg = load("dev", base())
    az = cfg.azure
    assert az.location == "westeurope"
    assert az.purge_protection is True
    assert (az.functions.instance_memory_mb, az.functions.max_instances) == (2048, 40)
    assert az.compute.max_nodes >= 1 and az.mlflow is False
    assert az.storage.archive_after_days > az.storage.cool_after_days
    assert AzureNames.of(cfg).resource_group == "tandem-dev-rg"


def test_stack_files_azure_sections():
    prod_cfg = load("prod", stack_file("prod"))
    assert prod_cfg.azure.network.functions_subnet_id
    assert prod_cfg.azure.purge_protection and prod_cfg.azure.mlflow
    assert AzureNames.of(prod_cfg).resource_group == "tandem-prod"
    staging_cfg = load("staging", stack_file("staging"))
    assert staging_cfg.azure.network.functions_subnet_id is None


@pytest.mark.parametrize(
    ("stack", "raw", "expected"),
    [
        (
            "dev",
            base(azure={"location": "westeurope"}),
            "stack 'dev': tandem:azure.location: is not a known key (the location is "
            "azure-native:location)",
        ),
        (
            "dev",
            {k: v for k, v in base().items() if k != "azure-native:location"},
            "stack 'dev': azure-native:location: is required",
        ),
        (
            "dev",
            {**base(), "azure-native:location": "West Europe"},
            "stack 'dev': azure-native:location: must be an Azure location",
        ),
        (
            "dev",
            base(azure={"functions": {"instance_memory_mb": 1024}}),
            "stack 'dev': tandem:azure.functions.instance_memory_mb: must be one of "
            "[512, 2048, 4096]",
        ),
        (
            "dev",
            base(azure={"functions": {"max_instances": 1001}}),
            "stack 'dev': tandem:azure.functions.max_instances: must be <= 1000 (got 1001)",
        ),
        (
            "dev",
            base(azure={"functions": {"max_instances": "40"}}),
            "stack 'dev': tandem:azure.functions.max_instances: must be an integer",
        ),
        (
            "dev",
            base(azure={"compute": {"vm_size": "DS3_v2"}}),
            "stack 'dev': tandem:azure.compute.vm_size: must be an Azure VM size",
        ),
        (
            "dev",
            base(azure={"compute": {"max_nodes": 0}}),
            "stack 'dev': tandem:azure.compute.max_nodes: must be >= 1 (got 0)",
        ),
        (
            "dev",
            base(azure={"network": {"allowed_ip_ranges": ["10.0.0.0/8"]}}),
            "stack 'dev': tandem:azure.network.allowed_ip_ranges: '10.0.0.0/8' is not a public",
        ),
        (
            "dev",
            base(azure={"network": {"allowed_ip_ranges": ["2001:db8::/32"]}}),
            "tandem:azure.network.allowed_ip_ranges: '2001:db8::/32': only IPv4 ranges",
        ),
        (
            "dev",
            base(azure={"network": {"allowed_ip_ranges": ["0.0.0.0/0"]}}),
            "tandem:azure.network.allowed_ip_ranges: '0.0.0.0/0' is broader than /8",
        ),
        (
            "dev",
            base(azure={"network": {"allowed_ip_ranges": ["203.0.113.7/24"]}}),
            "tandem:azure.network.allowed_ip_ranges: '203.0.113.7/24' is not an IPv4 address",
        ),
        (
            "dev",
            base(azure={"network": {"functions_subnet_id": "subnet-1"}}),
            "stack 'dev': tandem:azure.network.functions_subnet_id: must be a subnet's resource",
        ),
        (
            "prod",
            base(log_retention_days=400),
            "stack 'prod': tandem:azure.network.functions_subnet_id: is required in prod",
        ),
        (
            "staging",
            base(azure={"key_vault": {"purge_protection_waiver": "we rebuild it every day"}}),
            "stack 'staging': tandem:azure.key_vault.purge_protection_waiver: may be set only "
            "on a dev stack",
        ),
        (
            "prod",
            prod(azure={"key_vault": {"purge_protection_waiver": "we rebuild it every day"}}),
            "stack 'prod': tandem:azure.key_vault.purge_protection_waiver: may be set only",
        ),
        (
            "dev",
            base(azure={"key_vault": {"purge_protection_waiver": "dev"}}),
            "stack 'dev': tandem:azure.key_vault.purge_protection_waiver: must state the reason",
        ),
        (
            "dev",
            base(azure={"storage": {"cool_after_days": 200, "archive_after_days": 100}}),
            "stack 'dev': tandem:azure.storage: archive_after_days (100) must be greater than",
        ),
        (
            "dev",
            base(azure={"storage": {"capture_retention_days": 0}}),
            "stack 'dev': tandem:azure.storage.capture_retention_days: must be >= 1 (got 0)",
        ),
        (
            "dev",
            base(azure={"name_suffix": "ABC"}),
            "stack 'dev': tandem:azure.name_suffix: must be 4-6 lowercase letters or digits",
        ),
        (
            "dev",
            base(azure={"resource_group": "rg."}),
            "stack 'dev': tandem:azure.resource_group: must be 1-90 letters",
        ),
        (
            "dev",
            base(azure={"training_image_tag": "latest"}),
            "stack 'dev': tandem:azure.training_image_tag: must be an image tag naming one",
        ),
        ("dev", base(azure={"mlflow": "yes"}), "stack 'dev': tandem:azure.mlflow: must be true"),
        ("dev", base(azure={"regions": []}), "stack 'dev': tandem:azure.regions: is not a known"),
        ("dev", base(azure=[]), "stack 'dev': tandem:azure: must be a mapping"),
        (
            "dev",
            base(log_retention_days=7),
            "stack 'dev': tandem:log_retention_days: must be 30-730 days on a stack with Azure",
        ),
        (
            # fits a storage account (22 characters) but not a Key Vault (25)
            "dev",
            base(name_prefix="tandem-dev-feature"),
            "stack 'dev': tandem:name_prefix: Key Vault name 'tandem-dev-feature-",
        ),
        (
            "dev",
            base(name_prefix="tandem-feature-branch"),
            "stack 'dev': tandem:name_prefix: storage account name 'tandemfeaturebranch",
        ),
        (
            "dev",
            base(models=["credit--v2"]),
            "stack 'dev': tandem:models: model 'credit--v2' with name prefix 'tandem-dev': "
            "blob container name 'credit--v2-package'",
        ),
        (
            "dev",
            {**base(clouds=["aws"]), "tandem:azure": {}},
            "stack 'dev': tandem:azure: is set only for a stack whose clouds include 'azure'",
        ),
    ],
)
def test_bad_values_name_the_stack_and_the_key(stack, raw, expected):
    if "aws" in raw.get("tandem:clouds", []):
        raw = {**raw, "aws:region": "us-east-1"}
    with pytest.raises(ConfigError) as info:
        load(stack, raw)
    assert expected in str(info.value), f"expected {expected!r} in {str(info.value)!r}"


def test_only_dev_may_waive_purge_protection_and_says_why():
    reason = "dev vaults are rebuilt under the same name every day"
    cfg = load("dev", base(azure={"key_vault": {"purge_protection_waiver": reason}}))
    assert cfg.azure.purge_protection is False
    assert cfg.azure.key_vault.purge_protection_waiver == reason


def test_ip_ranges_are_normalised_for_storage_rules():
    ranges = ["198.51.100.7/32", "203.0.113.0/24"]
    cfg = load("dev", base(azure={"network": {"allowed_ip_ranges": ranges}}))
    assert cfg.azure.network.allowed_ip_ranges == ("198.51.100.7", "203.0.113.0/24")


def test_from_pulumi_reads_the_azure_location():
    pulumi.runtime.set_all_config(
        {
            "azure-native:location": "northeurope",
            "tandem:clouds": '["azure"]',
            "tandem:models": '["churn"]',
            "tandem:azure": '{"training_image_tag": "7"}',
        }
    )
    try:
        cfg = config.from_pulumi()
    finally:
        pulumi.runtime.set_all_config({})
    assert cfg.azure.location == "northeurope"
    assert cfg.azure.training_image_tag == "7"


# -- names ------------------------------------------------------------------------------
def test_suffix_is_stable_per_stack_and_differs_between_stacks():
    assert stack_suffix("prod", "tandem-prod") == stack_suffix("prod", "tandem-prod")
    assert stack_suffix("prod", "tandem-prod") != stack_suffix("staging", "tandem-prod")
    assert stack_suffix("prod", "tandem-prod") != stack_suffix("prod", "tandem-prod2")
    assert re.fullmatch(r"[a-z2-7]{6}", stack_suffix("prod", "tandem-prod"))
    a = AzureNames.of(load("dev", base()))
    assert a.storage_account == "tandemdev" + stack_suffix("dev", "tandem-dev")


def test_a_taken_name_is_fixed_with_a_suffix_of_ones_own():
    cfg = load("dev", base(azure={"name_suffix": "x7k2"}))
    n = AzureNames.of(cfg)
    assert (n.storage_account, n.key_vault) == ("tandemdevx7k2", "tandem-dev-x7k2")
    assert n.function_app("churn") == "tandem-dev-churn-x7k2"


STORAGE_RE = re.compile(r"^[a-z0-9]{3,24}$")
KEY_VAULT_RE = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
REGISTRY_RE = re.compile(r"^[a-zA-Z0-9]{5,50}$")
SITE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,58}[a-z0-9]$")
valid_prefixes = st.from_regex(naming.NAME_PREFIX_RE, fullmatch=True).filter(
    lambda p: "--" not in p
)
valid_models = st.from_regex(naming.MODEL_NAME_RE, fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(prefix=valid_prefixes, model=valid_models, stack=st.sampled_from(["dev", "staging-eu"]))
def test_whatever_the_config_accepts_azure_accepts(prefix, model, stack):
    raw = base(name_prefix=prefix, models=[model])
    try:
        cfg = load(stack, raw)
    except ConfigError as err:
        # Refused only for a name Azure would refuse, and the error says which.
        message = str(err)
        assert "tandem:name_prefix" in message or "tandem:models" in message, message
        suffix = stack_suffix(stack, prefix)
        assert azure_names.prefix_problems(prefix, suffix) or azure_names.model_name_problems(
            prefix, model, suffix
        ), message
        return
    n = AzureNames.of(cfg)
    assert STORAGE_RE.fullmatch(n.storage_account), n.storage_account
    assert KEY_VAULT_RE.fullmatch(n.key_vault), n.key_vault
    assert REGISTRY_RE.fullmatch(n.container_registry), n.container_registry
    for site in (n.function_app(model), n.plan(model)):
        assert SITE_RE.fullmatch(site), site
    assert azure_names.CONTAINER_RE.fullmatch(n.package_container(model))
    assert len(n.host_id(model)) <= azure_names.HOST_ID_MAX
    assert len(n.compute) <= azure_names.COMPUTE_MAX
    assert len(n.action_group_short_name) <= 12
