"""The Azure platform: the components wired in order, the role assignments between them,
and the stack outputs they produce.

Reached through `infra.azure.build_azure_platform`.

Order and why:
1. The resource group, and who deploys (tenant and subscription, from the provider).
2. ``Identities``: every user-assigned identity (roles come later, per resource).
3. ``Insights``: Log Analytics and Application Insights, the metrics resource.
4. ``KeyVault``: the vault, the storage key, the pseudonym key.
5. The storage identity's role on the key, then ``Storage`` (it unwraps the key at creation).
6. ``ContainerRegistry``, the workspace identity's documented roles on the workspace's
   resources, then ``MlWorkspace`` (Azure ML checks them at creation).
7. The training and function identities' roles, then ``Serving`` (an app reads its package
   and host storage with its identity from its first start).
8. ``Monitoring``: action group, alerts, diagnostic settings.
9. CI's roles (GitHub OIDC only): on the workspace, the apps, the containers, the secret.

Every role assignment goes through `infra.azure.access.Access`, which refuses a scope
broader than its rule allows; ``access.grants`` is the least-privilege table.

`AzurePlatform.outputs` is the contract with the ML side (`contract.outputs.AZURE`:
`ml/clouds/azure/` is built from these keys alone). Every name comes from `AzureNames`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pulumi
from pulumi import Output, ResourceOptions
from pulumi_azure_native import authorization, resources

from contract import metrics
from contract.layout import AZURE_CONTAINERS
from contract.outputs import AZURE
from infra.azure import roles
from infra.azure.access import Access, Grant
from infra.azure.identity import Identities, IdentitiesArgs
from infra.azure.insights import Insights, InsightsArgs
from infra.azure.keyvault import KeyVault, KeyVaultArgs
from infra.azure.monitoring import ALL_LOGS, AUDIT, Monitoring, MonitoringArgs
from infra.azure.names import HOST_CONTAINERS, AzureNames
from infra.azure.serving import Serving, ServingArgs
from infra.azure.storage import Storage, StorageArgs
from infra.azure.workspace import ContainerRegistry, MlWorkspace, RegistryArgs, WorkspaceArgs

if TYPE_CHECKING:
    from infra.config import StackConfig

# What each identity may do with Tandem's containers (role -> container role). Training reads
# datasets and writes artifacts and run records; a function reads artifacts and writes
# captures; CI runs the lifecycle (everything but writing captures, which it only reads).
TRAINING_CONTAINERS = {
    "data": roles.STORAGE_BLOB_DATA_READER,
    "models": roles.STORAGE_BLOB_DATA_CONTRIBUTOR,
}
FUNCTION_CONTAINERS = {
    "models": roles.STORAGE_BLOB_DATA_READER,
    "captures": roles.STORAGE_BLOB_DATA_CONTRIBUTOR,
}
CI_CONTAINERS = {
    "data": roles.STORAGE_BLOB_DATA_CONTRIBUTOR,
    "models": roles.STORAGE_BLOB_DATA_CONTRIBUTOR,
    "reports": roles.STORAGE_BLOB_DATA_CONTRIBUTOR,
    # captures: none until a cloud drift job reads them (the least-privilege test says so)
}


class AzurePlatform(pulumi.ComponentResource):
    """Every Azure component of one stack; children are attributes (``storage``, ...)."""

    resource_group: resources.ResourceGroup
    identities: Identities
    insights: Insights
    key_vault: KeyVault
    storage: Storage
    registry: ContainerRegistry
    workspace: MlWorkspace
    serving: Serving
    monitoring: Monitoring
    access: Access

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        stack: str,
        opts: ResourceOptions | None = None,
    ) -> None:
        super().__init__("tandem:azure:Platform", name, None, opts)
        if cfg.azure is None:
            raise ValueError(f"AzurePlatform: stack {stack!r} has no Azure section (tandem:azure)")
        self.cfg, self.stack = cfg, stack
        self.names = names = AzureNames.of(cfg)
        az = cfg.azure
        location, tags, models = az.location, cfg.all_tags, list(cfg.models)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))

        def after(*deps: pulumi.Resource) -> ResourceOptions:
            return ResourceOptions.merge(child_opts, ResourceOptions(depends_on=list(deps)))

        client = authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self)
        )
        self.tenant_id, self.subscription_id = client.tenant_id, client.subscription_id
        subnets = [az.network.functions_subnet_id] if az.network.functions_subnet_id else []
        network = {
            "default_deny": cfg.is_prod,
            "allowed_ip_ranges": list(az.network.allowed_ip_ranges),
            "subnet_ids": subnets,
        }

        self.resource_group = resources.ResourceGroup(
            f"{name}-rg",
            resource_group_name=names.resource_group,
            location=location,
            tags=tags,
            opts=child_opts,
        )
        rg = self.resource_group.name
        self.access = access = Access(f"{name}-access", self.subscription_id, opts=child_opts)

        gh = cfg.github_oidc
        self.identities = ids = Identities(
            "identities",
            IdentitiesArgs(
                names=names,
                resource_group_name=rg,
                location=location,
                models=models,
                github_subject=gh.subject if gh is not None else None,
                tags=tags,
            ),
            opts=child_opts,
        )

        self.insights = Insights(
            "insights",
            InsightsArgs(
                names=names,
                resource_group_name=rg,
                location=location,
                retention_days=cfg.log_retention_days,
                tags=tags,
            ),
            opts=child_opts,
        )
        metrics_resource = self.insights.application_insights

        self.key_vault = kv = KeyVault(
            "key-vault",
            KeyVaultArgs(
                names=names,
                resource_group_name=rg,
                location=location,
                tenant_id=self.tenant_id,
                purge_protection=az.purge_protection,
                soft_delete_retention_days=az.key_vault.soft_delete_retention_days,
                tags=tags,
                **network,
            ),
            opts=child_opts,
        )

        storage_deps: list[pulumi.Resource] = []
        if kv.storage_key is not None:
            storage_deps.append(
                access.grant(
                    Grant(
                        "storage-encryption",
                        roles.KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER,
                        "key:storage",
                    ),
                    ids.storage_encryption.principal_id,
                    kv.storage_key.id,
                )
            )
        cmk = kv.storage_key is not None
        self.storage = st = Storage(
            "storage",
            StorageArgs(
                names=names,
                resource_group_name=rg,
                location=location,
                models=models,
                encryption_identity_id=ids.storage_encryption.id if cmk else None,
                key_vault_uri=kv.vault.properties.vault_uri if cmk else None,
                key_name=kv.storage_key.name if kv.storage_key is not None else None,
                redundancy="Standard_LRS" if cfg.environment == "dev" else "Standard_GRS",
                soft_delete_days=az.storage.soft_delete_days,
                cool_after_days=az.storage.cool_after_days,
                archive_after_days=az.storage.archive_after_days,
                capture_retention_days=az.storage.capture_retention_days,
                tags=tags,
                **network,
            ),
            opts=after(*storage_deps),
        )

        self.registry = ContainerRegistry(
            "registry",
            RegistryArgs(
                names=names,
                resource_group_name=rg,
                location=location,
                sku="Basic" if cfg.environment == "dev" else "Standard",
                tags=tags,
            ),
            opts=child_opts,
        )
        registry = self.registry.registry

        def grant(who: str, role: str, what: str, principal: Any, scope: Any) -> Any:
            return access.grant(Grant(who, role, what), principal, scope)

        ws_principal = ids.workspace.principal_id
        workspace_grants = [
            grant("workspace", roles.CONTRIBUTOR, "storage-account", ws_principal, st.account.id),
            grant("workspace", roles.CONTRIBUTOR, "key-vault", ws_principal, kv.vault.id),
            grant(
                "workspace", roles.KEY_VAULT_SECRETS_OFFICER, "key-vault", ws_principal, kv.vault.id
            ),
            grant("workspace", roles.CONTRIBUTOR, "registry", ws_principal, registry.id),
            grant(
                "workspace",
                roles.CONTRIBUTOR,
                "metrics-resource",
                ws_principal,
                metrics_resource.id,
            ),
        ]
        self.workspace = MlWorkspace(
            "workspace",
            WorkspaceArgs(
                names=names,
                resource_group_name=rg,
                location=location,
                workspace_identity_id=ids.workspace.id,
                training_identity_id=ids.training.id,
                storage_account_id=st.account.id,
                key_vault_id=kv.vault.id,
                application_insights_id=metrics_resource.id,
                registry_id=registry.id,
                registry_login_server=registry.login_server,
                training_image_tag=az.training_image_tag,
                vm_size=az.compute.vm_size,
                max_nodes=az.compute.max_nodes,
                idle_minutes_before_scale_down=az.compute.idle_minutes_before_scale_down,
                public_network_access=not cfg.is_prod,
                high_business_impact=cfg.is_prod,
                tags=tags,
            ),
            opts=after(*workspace_grants),
        )

        tr_principal = ids.training.principal_id
        for role_, role in TRAINING_CONTAINERS.items():
            grant("training", role, f"container:{role_}", tr_principal, st.containers[role_].id)
        # no metrics role: the job writes its metrics into the model card, CI publishes them
        grant("training", roles.ACR_PULL, "registry", tr_principal, registry.id)

        function_grants: list[pulumi.Resource] = []
        for model, identity in ids.functions.items():
            who, principal = f"function:{model}", identity.principal_id
            scopes = {
                **{
                    f"container:{r}": (role, st.containers[r].id)
                    for r, role in FUNCTION_CONTAINERS.items()
                },
                f"container:{names.package_container(model)}": (
                    roles.STORAGE_BLOB_DATA_CONTRIBUTOR,
                    st.package_containers[model].id,
                ),
                **{
                    f"container:{c}": (
                        roles.STORAGE_BLOB_DATA_CONTRIBUTOR,
                        st.host_containers[c].id,
                    )
                    for c in HOST_CONTAINERS
                },
                "metrics-resource": (roles.MONITORING_METRICS_PUBLISHER, metrics_resource.id),
            }
            for what, (role, scope) in scopes.items():
                function_grants.append(grant(who, role, what, principal, scope))

        self.serving = Serving(
            "serving",
            ServingArgs(
                names=names,
                resource_group_name=rg,
                location=location,
                models=models,
                identities={m: (i.id, i.client_id) for m, i in ids.functions.items()},
                package_container_urls={
                    m: Output.concat(st.blob_endpoint, "/", c.name)
                    for m, c in st.package_containers.items()
                },
                storage_account_name=st.account.name,
                connection_string=metrics_resource.connection_string,
                capture_uri=st.container_url("captures"),
                instance_memory_mb=az.functions.instance_memory_mb,
                max_instances=az.functions.max_instances,
                subnet_id=az.network.functions_subnet_id,
                tags=tags,
            ),
            opts=after(*function_grants),
        )
        apps = {m: e.app for m, e in self.serving.endpoints.items()}

        self.monitoring = Monitoring(
            "monitoring",
            MonitoringArgs(
                names=names,
                resource_group_name=rg,
                location=location,
                models=models,
                function_apps={m: app.id for m, app in apps.items()},
                metrics_resource_id=metrics_resource.id,
                log_analytics_id=self.insights.log_analytics.id,
                diagnostics={
                    "key-vault": (kv.vault.id, AUDIT),
                    "blob-service": (st.blob_service.id, AUDIT),
                    "workspace": (self.workspace.workspace.id, ALL_LOGS),
                    **{f"function-{m}": (app.id, ALL_LOGS) for m, app in apps.items()},
                },
                alarm_emails=list(cfg.alarm_emails),
                tags=tags,
            ),
            opts=child_opts,
        )

        if ids.ci is not None:
            ci = ids.ci.principal_id
            for role_, role in CI_CONTAINERS.items():
                grant("ci", role, f"container:{role_}", ci, st.containers[role_].id)
            grant("ci", roles.AZUREML_DATA_SCIENTIST, "workspace", ci, self.workspace.workspace.id)
            grant(
                "ci",
                roles.KEY_VAULT_SECRETS_USER,
                f"secret:{names.pseudonym_secret}",
                ci,
                kv.pseudonym_secret.id,
            )
            grant(
                "ci",
                roles.MONITORING_METRICS_PUBLISHER,
                "metrics-resource",
                ci,
                metrics_resource.id,
            )
            grant("ci", roles.ACR_PUSH, "registry", ci, registry.id)
            for model, app in apps.items():
                grant("ci", roles.WEBSITE_CONTRIBUTOR, f"function-app:{model}", ci, app.id)

        self.register_outputs(self.outputs())

    def outputs(self) -> dict[str, Output[Any]]:
        """The stack outputs: exactly ``AZURE.required + AZURE.informational``, plus the
        ``AZURE.optional`` ones whose feature is on (`contract.outputs`)."""
        cfg, names = self.cfg, self.names
        st, ids, kv = self.storage, self.identities, self.key_vault
        appi = self.insights.application_insights
        ws = self.workspace
        out: dict[str, Any] = {
            "cloud": AZURE.cloud,
            "stack": self.stack,
            "location": cfg.azure.location,
            "name_prefix": names.prefix,
            "subscription_id": self.subscription_id,
            "resource_group": self.resource_group.name,
            "storage_account_url": st.blob_endpoint,
            "containers": {role: st.containers[role].name for role in AZURE_CONTAINERS},
            "workspace_name": ws.workspace.name,
            "compute_name": ws.compute.name,
            "training_identity_client_id": ids.training.client_id,
            "training_environment": ws.environment_uri,
            "endpoints": {
                model: {"function_app": e.app.name, "url": e.url}
                for model, e in self.serving.endpoints.items()
            },
            "metrics_resource_id": appi.id,
            "metric_namespace": metrics.NAMESPACE,
            "key_vault_url": kv.vault.properties.vault_uri,
            "pseudonym_secret_name": kv.pseudonym_secret.name,
            # informational: for people and tools, read by no adapter
            "tenant_id": self.tenant_id,
            "storage_account_name": st.account.name,
            "key_vault_name": kv.vault.name,
            "log_analytics_workspace_id": self.insights.log_analytics.id,
            "application_insights_name": appi.name,
            "container_registry_login_server": self.registry.registry.login_server,
            "action_group_id": self.monitoring.action_group.id,
            "alert_names": self.monitoring.alert_names,
            "function_identity_client_ids": {m: i.client_id for m, i in ids.functions.items()},
            # Every stack exports the same keys; "" says this stack has no CI identity.
            "ci_identity_client_id": ids.ci.client_id if ids.ci is not None else "",
            "functions_package_container": {m: c.name for m, c in st.package_containers.items()},
        }
        if cfg.azure.mlflow:
            out["mlflow_tracking_uri"] = ws.workspace.ml_flow_tracking_uri
        AZURE.check_exported(out, "AzurePlatform.outputs")
        return {key: Output.from_input(value) for key, value in out.items()}


__all__ = ["AzurePlatform"]
