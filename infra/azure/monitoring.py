"""Alerting and the audit trail: an action group, metric alerts, diagnostic settings.

- The action group e-mails ``alarm_emails`` (common alert schema).
- Each model's function app: HTTP 5xx and response time alert on **dynamic thresholds**
  (Azure Monitor learns each app's normal level per hour and weekday, the twin of
  CloudWatch anomaly bands), as multi-resource criteria evaluated from ``global``.
  https://learn.microsoft.com/en-us/azure/azure-monitor/alerts/alerts-dynamic-thresholds
- Tandem's own metrics (`contract.metrics`: namespace ``Tandem``, ``drift_score`` and
  ``model_quality``, dimension ``Model``) alert on static thresholds on the metrics
  resource, per model, exactly as the AWS alarms watch them. The metrics appear only once
  published, so the criteria skip Azure Monitor's metric validation.
- Diagnostic settings send the Key Vault's and the blob service's audit logs, and all logs
  of the Azure ML workspace and of each function app, to Log Analytics (CIS 5.1.x): the
  twin of CloudTrail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import monitor

from contract import metrics
from infra.azure.names import AzureNames
from infra.common.checks import check_emails, check_models

WEB_SITES = "Microsoft.Web/sites"
# App Service metrics of a function app; HttpResponseTime is in seconds.
# https://learn.microsoft.com/en-us/azure/azure-monitor/reference/supported-metrics/microsoft-web-sites-metrics
HTTP_5XX = "Http5xx"
RESPONSE_TIME = "HttpResponseTime"
# What each resource sends to Log Analytics: the audit group where that is the trail,
# everything where the logs are small and the point (job events, function logs).
AUDIT, ALL_LOGS = "audit", "allLogs"


@dataclass
class MonitoringArgs:
    """Inputs of the monitoring component.

    function_apps: model -> the app's resource id.
    metrics_resource_id: where Tandem's metrics are published (Application Insights).
    diagnostics: resource id -> category group (``audit`` or ``allLogs``) sent to Log
        Analytics; keyed by a label for the resource name (``key-vault``, ...).
    """

    names: AzureNames
    resource_group_name: Input[str]
    location: str
    models: list[str]
    function_apps: dict[str, Input[str]]
    metrics_resource_id: Input[str]
    log_analytics_id: Input[str]
    diagnostics: dict[str, tuple[Input[str], str]]
    alarm_emails: list[str] = field(default_factory=list)
    drift_max: float = 0.2
    quality_min: float = 0.7
    sensitivity: str = "Medium"
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        check_models("Monitoring", self.models)
        check_emails("Monitoring", "alarm_emails", self.alarm_emails)
        unknown = sorted(set(self.function_apps) - set(self.models))
        if unknown:
            raise ValueError(f"Monitoring: function_apps of models not in models: {unknown}")
        if not self.drift_max > 0:
            raise ValueError(f"Monitoring: drift_max={self.drift_max!r} must be > 0")
        if not 0 < self.quality_min <= 1:
            raise ValueError(f"Monitoring: quality_min={self.quality_min!r} must be in (0, 1]")
        if self.sensitivity not in ("Low", "Medium", "High"):
            raise ValueError(f"Monitoring: sensitivity {self.sensitivity!r}")
        for label, (_, group) in self.diagnostics.items():
            if group not in (AUDIT, ALL_LOGS):
                raise ValueError(f"Monitoring: diagnostics[{label!r}] group {group!r}")


class Monitoring(pulumi.ComponentResource):
    """``action_group``, ``alerts`` (alert name -> MetricAlert), ``diagnostic_settings``
    (label -> DiagnosticSetting); ``alert_names`` in creation order."""

    action_group: monitor.ActionGroup
    alerts: dict[str, monitor.MetricAlert]
    diagnostic_settings: dict[str, monitor.DiagnosticSetting]
    alert_names: list[str]

    def __init__(
        self, name: str, args: MonitoringArgs, opts: ResourceOptions | None = None
    ) -> None:
        args.validate()
        super().__init__("tandem:azure:Monitoring", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        names = args.names

        self.action_group = monitor.ActionGroup(
            f"{name}-action-group",
            action_group_name=names.action_group,
            group_short_name=names.action_group_short_name,
            resource_group_name=args.resource_group_name,
            location="global",
            enabled=True,
            email_receivers=[
                monitor.MicrosoftCommonEmailReceiverArgs(
                    name=f"email-{i}", email_address=address, use_common_alert_schema=True
                )
                for i, address in enumerate(args.alarm_emails)
            ],
            tags=args.tags,
            opts=child_opts,
        )
        actions = [monitor.MetricAlertActionArgs(action_group_id=self.action_group.id)]
        self.alerts = {}

        def alert(
            alert_name: str, description: str, scope: Input[str], criteria: object, **kw: object
        ) -> None:
            self.alerts[alert_name] = monitor.MetricAlert(
                f"{name}-{alert_name.removeprefix(names.prefix + '-')}",
                rule_name=alert_name,
                resource_group_name=args.resource_group_name,
                location="global",
                description=description,
                enabled=True,
                auto_mitigate=True,
                scopes=[scope],
                criteria=criteria,
                actions=actions,
                tags=args.tags,
                opts=child_opts,
                **kw,
            )

        for model in args.models:
            app = args.function_apps.get(model)
            if app is not None:
                for what, metric, aggregation, severity in (
                    ("http-5xx", HTTP_5XX, "Total", 1),
                    ("response-time", RESPONSE_TIME, "Average", 2),
                ):
                    alert(
                        names.alert(f"{model}-{what}"),
                        f"{model}: {metric} outside its learned range (dynamic threshold)",
                        app,
                        monitor.MetricAlertMultipleResourceMultipleMetricCriteriaArgs(
                            odata_type="Microsoft.Azure.Monitor.MultipleResourceMultipleMetricCriteria",
                            all_of=[
                                monitor.DynamicMetricCriteriaArgs(
                                    criterion_type="DynamicThresholdCriterion",
                                    name=metric,
                                    metric_name=metric,
                                    metric_namespace=WEB_SITES,
                                    operator="GreaterThan",
                                    time_aggregation=aggregation,
                                    alert_sensitivity=args.sensitivity,
                                    failing_periods=monitor.DynamicThresholdFailingPeriodsArgs(
                                        number_of_evaluation_periods=4,
                                        min_failing_periods_to_alert=3,
                                    ),
                                )
                            ],
                        ),
                        severity=severity,
                        evaluation_frequency="PT5M",
                        window_size="PT5M",
                        target_resource_type=WEB_SITES,
                        target_resource_region=args.location,
                    )
            for what, metric, operator, threshold in (
                ("drift", metrics.DRIFT_SCORE, "GreaterThan", args.drift_max),
                ("quality", metrics.MODEL_QUALITY, "LessThan", args.quality_min),
            ):
                alert(
                    names.alert(f"{model}-{what}"),
                    f"{model}: {metric} {operator} {threshold}",
                    args.metrics_resource_id,
                    monitor.MetricAlertSingleResourceMultipleMetricCriteriaArgs(
                        odata_type="Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria",
                        all_of=[
                            monitor.MetricCriteriaArgs(
                                criterion_type="StaticThresholdCriterion",
                                name=metric,
                                metric_name=metric,
                                metric_namespace=metrics.NAMESPACE,
                                operator=operator,
                                threshold=threshold,
                                time_aggregation="Maximum"
                                if operator == "GreaterThan"
                                else "Minimum",
                                # The dimension set an alarm watches: Model alone.
                                dimensions=[
                                    monitor.MetricDimensionArgs(
                                        name=dim, operator="Include", values=[value]
                                    )
                                    for dim, value in metrics.dimensions(model).items()
                                ],
                                # A custom metric exists only once published.
                                skip_metric_validation=True,
                            )
                        ],
                    ),
                    severity=2,
                    evaluation_frequency="PT15M",
                    window_size="PT1H",
                )
        self.alert_names = list(self.alerts)

        self.diagnostic_settings = {
            label: monitor.DiagnosticSetting(
                f"{name}-diagnostics-{label}",
                name=names.diagnostic_setting,
                resource_uri=resource_id,
                workspace_id=args.log_analytics_id,
                logs=[monitor.DiagnosticsLogSettingsArgs(category_group=group, enabled=True)],
                opts=child_opts,
            )
            for label, (resource_id, group) in args.diagnostics.items()
        }
        self.register_outputs(
            {
                "action_group_id": self.action_group.id,
                "alert_names": Output.from_input(self.alert_names),
            }
        )
