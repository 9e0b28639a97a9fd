"""Azure ML: the stack's container registry, the workspace, its training cluster and the
environment training jobs run in.

- ``ContainerRegistry``: holds Tandem's training image (pushed by CI); no admin user, no
  anonymous pull (CKV_AZURE_137/138): every pull and push signs in with Entra ID.
- ``MlWorkspace``: linked to the stack's storage account, Key Vault, Application Insights and
  registry; runs as its own user-assigned identity; reaches its system datastores with
  identities, never with the account key the storage account refuses anyway
  (``system_datastores_auth_mode="identity"``); public network access off in prod
  (CKV_AZURE_144). The workspace identity's roles on those resources must exist before it
  is created: the platform passes them in ``depends_on``.
- The cluster scales from 0 nodes (nothing runs, nothing is billed) to ``max_nodes``, has no
  local (key) authentication, no SSH, and runs jobs as the training identity
  (CKV_AZURE_142/150).
- The environment ``azureml:<prefix>-training:<tag>`` names the training image; the
  adapter's job runner submits jobs with it (stack output ``training_environment``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import containerregistry, machinelearningservices

from infra.azure.names import AzureNames

IDLE_MIN_MINUTES = 1  # the cluster's idle time before it scales down, in whole minutes


@dataclass
class RegistryArgs:
    names: AzureNames
    resource_group_name: Input[str]
    location: str
    sku: str = "Standard"
    tags: dict[str, str] = field(default_factory=dict)


class ContainerRegistry(pulumi.ComponentResource):
    """``registry``: the stack's Azure Container Registry."""

    registry: containerregistry.Registry

    def __init__(self, name: str, args: RegistryArgs, opts: ResourceOptions | None = None) -> None:
        super().__init__("tandem:azure:ContainerRegistry", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        self.registry = containerregistry.Registry(
            f"{name}-registry",
            registry_name=args.names.container_registry,
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku=containerregistry.SkuArgs(name=args.sku),
            admin_user_enabled=False,
            anonymous_pull_enabled=False,
            tags=args.tags,
            opts=child_opts,
        )
        self.register_outputs({"login_server": self.registry.login_server})


@dataclass
class WorkspaceArgs:
    """Inputs of the Azure ML workspace component.

    workspace_identity_id: the workspace's own user-assigned identity.
    training_identity_id: what the cluster's jobs run as.
    storage_account_id, key_vault_id, application_insights_id, registry_id: the resources the
        workspace is linked to.
    registry_login_server: where the training image lives.
    training_image_tag: the image's tag, also the environment's version.
    public_network_access: False in prod.
    """

    names: AzureNames
    resource_group_name: Input[str]
    location: str
    workspace_identity_id: Input[str]
    training_identity_id: Input[str]
    storage_account_id: Input[str]
    key_vault_id: Input[str]
    application_insights_id: Input[str]
    registry_id: Input[str]
    registry_login_server: Input[str]
    training_image_tag: str
    vm_size: str = "Standard_DS3_v2"
    max_nodes: int = 2
    idle_minutes_before_scale_down: int = 2
    public_network_access: bool = True
    high_business_impact: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not 1 <= self.max_nodes <= 100:
            raise ValueError(f"MlWorkspace: max_nodes={self.max_nodes} must be 1..100")
        if self.idle_minutes_before_scale_down < IDLE_MIN_MINUTES:
            raise ValueError("MlWorkspace: idle_minutes_before_scale_down must be >= 1")


class MlWorkspace(pulumi.ComponentResource):
    """``workspace``, ``compute``, ``environment`` (container) and ``environment_version``;
    ``environment_uri`` is ``azureml:<name>:<version>``."""

    workspace: machinelearningservices.Workspace
    compute: machinelearningservices.Compute
    environment: machinelearningservices.EnvironmentContainer
    environment_version: machinelearningservices.EnvironmentVersion
    environment_uri: Output[str]

    def __init__(self, name: str, args: WorkspaceArgs, opts: ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("tandem:azure:MlWorkspace", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        names = args.names
        self.workspace = machinelearningservices.Workspace(
            f"{name}-workspace",
            workspace_name=names.workspace,
            resource_group_name=args.resource_group_name,
            location=args.location,
            friendly_name=names.workspace,
            description=f"Tandem ({names.prefix})",
            sku=machinelearningservices.SkuArgs(name="Basic", tier="Basic"),
            identity=machinelearningservices.ManagedServiceIdentityArgs(
                type="UserAssigned", user_assigned_identities=[args.workspace_identity_id]
            ),
            primary_user_assigned_identity=args.workspace_identity_id,
            storage_account=args.storage_account_id,
            key_vault=args.key_vault_id,
            application_insights=args.application_insights_id,
            container_registry=args.registry_id,
            system_datastores_auth_mode="identity",
            public_network_access="Enabled" if args.public_network_access else "Disabled",
            allow_public_access_when_behind_vnet=False,
            hbi_workspace=args.high_business_impact,
            v1_legacy_mode=False,
            tags=args.tags,
            opts=child_opts,
        )
        in_workspace = ResourceOptions.merge(child_opts, ResourceOptions(parent=self.workspace))
        workspace_name = self.workspace.name

        self.compute = machinelearningservices.Compute(
            f"{name}-compute",
            compute_name=names.compute,
            workspace_name=workspace_name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            identity=machinelearningservices.ManagedServiceIdentityArgs(
                type="UserAssigned", user_assigned_identities=[args.training_identity_id]
            ),
            properties=machinelearningservices.AmlComputeArgs(
                compute_type="AmlCompute",
                disable_local_auth=True,
                description="Tandem training jobs",
                properties=machinelearningservices.AmlComputePropertiesArgs(
                    vm_size=args.vm_size,
                    vm_priority="Dedicated",
                    os_type="Linux",
                    remote_login_port_public_access="Disabled",
                    scale_settings=machinelearningservices.ScaleSettingsArgs(
                        min_node_count=0,
                        max_node_count=args.max_nodes,
                        node_idle_time_before_scale_down=(
                            f"PT{args.idle_minutes_before_scale_down}M"
                        ),
                    ),
                ),
            ),
            tags=args.tags,
            opts=in_workspace,
        )

        self.environment = machinelearningservices.EnvironmentContainer(
            f"{name}-environment",
            name=names.training_environment,
            workspace_name=workspace_name,
            resource_group_name=args.resource_group_name,
            properties=machinelearningservices.EnvironmentContainerPropertiesArgs(
                description="Tandem's training image (deploy/training/)"
            ),
            opts=in_workspace,
        )
        image = Output.concat(
            args.registry_login_server,
            f"/{names.training_repository}:{args.training_image_tag}",
        )
        self.environment_version = machinelearningservices.EnvironmentVersion(
            f"{name}-environment-version",
            name=self.environment.name,
            version=args.training_image_tag,
            workspace_name=workspace_name,
            resource_group_name=args.resource_group_name,
            properties=machinelearningservices.EnvironmentVersionPropertiesArgs(
                image=image,
                os_type="Linux",
                description="Tandem's training image, by the tag CI pushed",
            ),
            opts=ResourceOptions.merge(in_workspace, ResourceOptions(parent=self.environment)),
        )
        # ARM names a version resource by its version: the environment is the container's.
        self.environment_uri = Output.all(self.environment.name, self.environment_version.id).apply(
            lambda v: f"azureml:{v[0]}:{args.training_image_tag}"
        )
        self.register_outputs({"workspace": workspace_name, "environment": self.environment_uri})
