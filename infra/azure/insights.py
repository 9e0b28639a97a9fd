"""Where the stack's logs and telemetry go: a Log Analytics workspace and a workspace-based
Application Insights component.

Log Analytics keeps the audit trail (diagnostic settings of the vault, storage, the Azure
ML workspace and the function apps, `infra.azure.monitoring`) for ``retention_days``.
Application Insights receives the function apps' telemetry and carries Tandem's own metrics
(namespace ``Tandem``): it is the stack's metrics resource. Both refuse their shared keys
(local auth off): every writer signs in with Entra ID and needs Monitoring Metrics Publisher
on the component, which `infra.azure.access` grants to the functions, training and CI only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi import Input, ResourceOptions
from pulumi_azure_native import applicationinsights, operationalinsights

from infra.azure.names import AzureNames


@dataclass
class InsightsArgs:
    names: AzureNames
    resource_group_name: Input[str]
    location: str
    retention_days: int
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not 30 <= self.retention_days <= 730:
            raise ValueError(f"Insights: retention_days={self.retention_days} must be 30..730")


class Insights(pulumi.ComponentResource):
    """``log_analytics`` and ``application_insights`` (the metrics resource)."""

    log_analytics: operationalinsights.Workspace
    application_insights: applicationinsights.Component

    def __init__(self, name: str, args: InsightsArgs, opts: ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("tandem:azure:Insights", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        self.log_analytics = operationalinsights.Workspace(
            f"{name}-logs",
            workspace_name=args.names.log_analytics,
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku=operationalinsights.WorkspaceSkuArgs(name="PerGB2018"),
            retention_in_days=args.retention_days,
            features=operationalinsights.WorkspaceFeaturesArgs(
                disable_local_auth=True,
                enable_log_access_using_only_resource_permissions=True,
            ),
            tags=args.tags,
            opts=child_opts,
        )
        self.application_insights = applicationinsights.Component(
            f"{name}-appi",
            resource_name_=args.names.application_insights,
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind="web",
            application_type="web",
            ingestion_mode="LogAnalytics",
            workspace_resource_id=self.log_analytics.id,
            disable_local_auth=True,
            tags=args.tags,
            opts=child_opts,
        )
        self.register_outputs(
            {
                "log_analytics_id": self.log_analytics.id,
                "application_insights_id": self.application_insights.id,
            }
        )
