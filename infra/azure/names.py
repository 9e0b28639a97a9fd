"""Every Azure resource name derived from the stack config, in one place, within Azure's limits.

Storage accounts, Key Vaults, container registries and function apps have globally unique
names (they are DNS labels). They carry a suffix that is stable for the stack: the first
characters of a hash of the stack and the name prefix, so a redeploy finds the same names,
two stacks never share one, and a preview shows the real names (no cloud call needed).
Another tenant may still hold a name; ``tandem:azure.name_suffix`` then picks another suffix.

A prefix that cannot fit a limit is a config error (`prefix_problems`, `model_name_problems`),
never a failure halfway through ``pulumi up``. No Pulumi here.
https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/resource-name-rules
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contract import layout, naming

if TYPE_CHECKING:
    from infra.config import StackConfig

SUFFIX_CHARS = 6
STORAGE_ACCOUNT_MAX = 24  # 3-24 lowercase letters and digits
KEY_VAULT_MAX = 24  # 3-24 letters, digits and hyphens, starting with a letter
REGISTRY_MAX = 50  # 5-50 letters and digits
SITE_MAX = 60  # function app (Microsoft.Web/sites) and plan names: 2-60
COMPUTE_MAX = 16  # Azure ML compute names: 2-16
# The Functions host's own containers in AzureWebJobsStorage (fixed by the host).
HOST_CONTAINERS = ("azure-webjobs-hosts", "azure-webjobs-secrets")
# A blob container name: 3-63 lowercase letters, digits and single hyphens.
CONTAINER_RE = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
# The Functions host id (AzureFunctionsWebHost__hostid): at most 32 characters.
HOST_ID_MAX = 32


def stack_suffix(stack: str, prefix: str) -> str:
    """A stable suffix for ``stack``'s global names: base32 of SHA-256, lowercase."""
    digest = hashlib.sha256(f"tandem\n{stack}\n{prefix}".encode()).digest()
    return base64.b32encode(digest).decode().lower()[:SUFFIX_CHARS]


def _compact(prefix: str) -> str:
    return prefix.replace("-", "")


@dataclass(frozen=True)
class AzureNames:
    """Names of one stack's Azure resources (``prefix`` is the stack's name prefix)."""

    prefix: str
    suffix: str
    resource_group_override: str | None = None

    def __post_init__(self) -> None:
        naming.check_name_prefix(self.prefix)

    @classmethod
    def of(cls, cfg: StackConfig) -> AzureNames:
        section = cfg.azure
        suffix = (section.name_suffix if section else None) or stack_suffix(
            cfg.stack, cfg.name_prefix
        )
        return cls(cfg.name_prefix, suffix, section.resource_group if section else None)

    # -- globally unique ------------------------------------------------------------------
    @property
    def storage_account(self) -> str:
        return f"{_compact(self.prefix)}{self.suffix}"

    @property
    def key_vault(self) -> str:
        return f"{self.prefix}-{self.suffix}"

    @property
    def container_registry(self) -> str:
        return f"{_compact(self.prefix)}{self.suffix}"

    def function_app(self, model: str) -> str:
        return f"{self.prefix}-{model}-{self.suffix}"

    # -- unique in the resource group ------------------------------------------------------
    @property
    def resource_group(self) -> str:
        return self.resource_group_override or f"{self.prefix}-rg"

    @property
    def log_analytics(self) -> str:
        return f"{self.prefix}-logs"

    @property
    def application_insights(self) -> str:
        return f"{self.prefix}-appi"

    @property
    def workspace(self) -> str:
        return f"{self.prefix}-mlw"

    @property
    def compute(self) -> str:
        """Unique within the workspace."""
        return "training"

    @property
    def training_environment(self) -> str:
        return f"{self.prefix}-training"

    @property
    def training_repository(self) -> str:
        """The repository of Tandem's training image in the stack's registry."""
        return "tandem-training"

    def plan(self, model: str) -> str:
        """Flex Consumption hosts one app per plan."""
        return f"{self.prefix}-{model}-fc"

    def identity(self, role: str) -> str:
        return f"{self.prefix}-{role}-id"

    def function_identity(self, model: str) -> str:
        return self.identity(f"{model}-fn")

    @property
    def storage_key(self) -> str:
        """The customer-managed key that encrypts the storage account."""
        return f"{self.prefix}-storage-cmk"

    @property
    def pseudonym_secret(self) -> str:
        return "pseudonym-key"

    @property
    def action_group(self) -> str:
        return f"{self.prefix}-alerts"

    @property
    def action_group_short_name(self) -> str:
        """Shown in alert e-mails and SMS: at most 12 characters."""
        return _compact(self.prefix)[:12]

    def alert(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    @property
    def diagnostic_setting(self) -> str:
        return f"{self.prefix}-audit"

    # -- inside the storage account --------------------------------------------------------
    @staticmethod
    def container(role: str) -> str:
        """The blob container of a store role (`contract.layout.AZURE_CONTAINERS`)."""
        if role not in layout.AZURE_CONTAINERS:
            raise ValueError(f"unknown container role {role!r}")
        return role

    @staticmethod
    def package_container(model: str) -> str:
        """Where Flex Consumption keeps one app's deployment package."""
        return f"{model}-package"

    @staticmethod
    def host_id(model: str) -> str:
        """The app's Functions host id: unique among the apps sharing the storage account
        (by default the host takes the first 32 characters of the app name, which two
        models of one long prefix could share)."""
        return model


def prefix_problems(prefix: str, suffix: str = "x" * SUFFIX_CHARS) -> list[str]:
    """What of the stack's global names would not fit (``[]`` if all do)."""
    names = AzureNames(prefix, suffix)
    problems = []
    for kind, name, limit in (
        ("storage account", names.storage_account, STORAGE_ACCOUNT_MAX),
        ("Key Vault", names.key_vault, KEY_VAULT_MAX),
        ("container registry", names.container_registry, REGISTRY_MAX),
    ):
        if len(name) > limit:
            problems.append(f"{kind} name {name!r} is {len(name)} characters (max {limit})")
    if len(names.container_registry) < 5:
        problems.append(f"container registry name {names.container_registry!r} is under 5")
    return problems


def model_name_problems(prefix: str, model: str, suffix: str = "x" * SUFFIX_CHARS) -> list[str]:
    """What of ``model``'s Azure resources would not fit (``[]`` if all do)."""
    names = AzureNames(prefix, suffix)
    problems = []
    for kind, name in (
        ("function app", names.function_app(model)),
        ("plan", names.plan(model)),
    ):
        if len(name) > SITE_MAX:
            problems.append(f"{kind} name {name!r} is {len(name)} characters (max {SITE_MAX})")
    container = names.package_container(model)
    if not CONTAINER_RE.fullmatch(container):
        problems.append(
            f"blob container name {container!r} is not 3-63 lowercase letters, digits and "
            "single hyphens"
        )
    if len(names.host_id(model)) > HOST_ID_MAX:
        problems.append(f"function host id {model!r} is over {HOST_ID_MAX} characters")
    return problems
