"""Alerts and the audit trail: the action group, dynamic-threshold alerts on each app,
static alerts on Tandem's own metrics (the names and dimensions the AWS alarms watch), and
diagnostic settings into Log Analytics."""

from __future__ import annotations

from contract import metrics
from infra.azure.monitoring import HTTP_5XX, RESPONSE_TIME, WEB_SITES
from infra.azure.names import AzureNames
from tests.infra.azure_mocks import resource_group_id


def alerts(built) -> dict[str, dict]:
    return {r.inputs["ruleName"]: r.inputs for r in built.all("monitor:MetricAlert")}


def test_action_group_mails_the_configured_addresses(prod):
    group = prod.one("monitor:ActionGroup").inputs
    n = AzureNames.of(prod.cfg)
    assert group["location"] == "global" and group["enabled"] is True
    assert len(group["groupShortName"]) <= 12
    assert group["groupShortName"] == n.action_group_short_name
    assert [r["emailAddress"] for r in group["emailReceivers"]] == list(prod.cfg.alarm_emails)
    assert all(r["useCommonAlertSchema"] is True for r in group["emailReceivers"])
    assert len({r["name"] for r in group["emailReceivers"]}) == len(prod.cfg.alarm_emails)


def test_every_alert_notifies_the_action_group(prod):
    group_id = prod.outputs["action_group_id"]
    for name, alert in alerts(prod).items():
        assert [a["actionGroupId"] for a in alert["actions"]] == [group_id], name
        assert alert["location"] == "global" and alert["enabled"] is True, name
    assert sorted(prod.outputs["alert_names"]) == sorted(alerts(prod))


def test_each_app_alerts_on_failures_and_response_time_with_dynamic_thresholds(prod):
    n = AzureNames.of(prod.cfg)
    sites = f"{resource_group_id(n.resource_group)}/providers/Microsoft.Web/sites"
    found = alerts(prod)
    for model in prod.cfg.models:
        for what, metric, aggregation in (
            ("http-5xx", HTTP_5XX, "Total"),
            ("response-time", RESPONSE_TIME, "Average"),
        ):
            alert = found[n.alert(f"{model}-{what}")]
            assert alert["scopes"] == [f"{sites}/{n.function_app(model)}"]
            assert alert["targetResourceType"] == WEB_SITES
            assert alert["targetResourceRegion"] == prod.cfg.azure.location
            criteria = alert["criteria"]
            assert criteria["odataType"] == (
                "Microsoft.Azure.Monitor.MultipleResourceMultipleMetricCriteria"
            )
            (criterion,) = criteria["allOf"]
            assert criterion["criterionType"] == "DynamicThresholdCriterion"
            assert (criterion["metricName"], criterion["metricNamespace"]) == (metric, WEB_SITES)
            assert criterion["timeAggregation"] == aggregation
            assert criterion["operator"] == "GreaterThan"
            assert criterion["alertSensitivity"] in ("Low", "Medium", "High")
            periods = criterion["failingPeriods"]
            assert periods["minFailingPeriodsToAlert"] <= periods["numberOfEvaluationPeriods"]


def test_model_metrics_alert_on_the_metrics_resource_by_model(prod):
    n = AzureNames.of(prod.cfg)
    found = alerts(prod)
    metrics_resource = prod.outputs["metrics_resource_id"]
    for model in prod.cfg.models:
        for what, metric, operator in (
            ("drift", metrics.DRIFT_SCORE, "GreaterThan"),
            ("quality", metrics.MODEL_QUALITY, "LessThan"),
        ):
            alert = found[n.alert(f"{model}-{what}")]
            assert alert["scopes"] == [metrics_resource]
            (criterion,) = alert["criteria"]["allOf"]
            assert alert["criteria"]["odataType"] == (
                "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria"
            )
            assert criterion["criterionType"] == "StaticThresholdCriterion"
            assert criterion["metricName"] == metric
            assert criterion["metricNamespace"] == metrics.NAMESPACE
            assert criterion["operator"] == operator
            assert criterion["skipMetricValidation"] is True  # exists once published
            # The alarm's dimension set: Model alone (a version changes with every deploy).
            assert {d["name"]: d["values"] for d in criterion["dimensions"]} == {
                dim: [model] for dim in metrics.ALARM_DIMENSIONS
            }
    assert len(found) == 4 * len(prod.cfg.models)


def test_audit_trail_goes_to_log_analytics(prod):
    n = AzureNames.of(prod.cfg)
    rg = f"{resource_group_id(n.resource_group)}/providers"
    logs = f"{rg}/Microsoft.OperationalInsights/workspaces/{n.log_analytics}"
    expected = {
        f"{rg}/Microsoft.KeyVault/vaults/{n.key_vault}": "audit",
        f"{rg}/Microsoft.Storage/storageAccounts/{n.storage_account}/blobServices/default": (
            "audit"
        ),
        f"{rg}/Microsoft.MachineLearningServices/workspaces/{n.workspace}": "allLogs",
        **{f"{rg}/Microsoft.Web/sites/{n.function_app(m)}": "allLogs" for m in prod.cfg.models},
    }
    got = {}
    for record in prod.all("monitor:DiagnosticSetting"):
        setting = record.inputs
        assert setting["workspaceId"] == logs, record.name
        (log,) = setting["logs"]
        assert log["enabled"] is True, record.name
        got[setting["resourceUri"]] = log["categoryGroup"]
    assert got == expected


def test_telemetry_lands_in_the_workspace_and_refuses_shared_keys(prod):
    n = AzureNames.of(prod.cfg)
    logs = prod.one("operationalinsights:Workspace").inputs
    assert logs["retentionInDays"] == prod.cfg.log_retention_days
    assert logs["features"]["disableLocalAuth"] is True
    component = prod.one("applicationinsights:Component").inputs
    assert component["disableLocalAuth"] is True
    assert component["ingestionMode"] == "LogAnalytics"
    assert component["workspaceResourceId"].endswith(f"/workspaces/{n.log_analytics}")
    assert prod.outputs["metrics_resource_id"].endswith(
        f"/Microsoft.Insights/components/{n.application_insights}"
    )
    assert prod.outputs["metric_namespace"] == metrics.NAMESPACE
