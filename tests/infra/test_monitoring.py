"""Monitoring: encrypted, non-public alarm topic; anomaly-band alarms on each model's Lambda;
threshold alarms on Tandem's drift and quality metrics; every alarm acts."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.aws.monitoring import Monitoring, MonitoringArgs
from tests.infra.conftest import ACCOUNT, REGION

KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TAGS = {"project": "tandem"}
EMAILS = ["oncall@example.com", "ml-team@example.org"]
ALARM_SOURCE = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:tandem-dev-*"
LAMBDA_ALARMS = {
    "lambda-duration": ("Duration", "GreaterThanUpperThreshold", "notBreaching"),
    "lambda-errors": ("Errors", "GreaterThanUpperThreshold", "notBreaching"),
    "lambda-throttles": ("Throttles", "GreaterThanUpperThreshold", "notBreaching"),
    "lambda-invocations-drop": ("Invocations", "LessThanLowerThreshold", "breaching"),
}


def _args(**overrides) -> MonitoringArgs:
    values = {
        "name_prefix": "tandem-dev",
        "kms_key_arn": KEY,
        "functions": {
            m: pulumi.Output.from_input(f"tandem-dev-{m}-serve") for m in ("churn", "fraud")
        },
        "models": ["churn", "fraud"],
        "alarm_emails": EMAILS,
        "tags": TAGS,
    }
    values.update(overrides)
    return MonitoringArgs(**values)


def _plain(output: pulumi.Output) -> pulumi.Output:
    return output.apply(lambda v: json.loads(json.dumps(v)))


@pulumi.runtime.test
def test_topic_is_encrypted_and_only_this_accounts_alarms_may_publish():
    monitoring = Monitoring("monitoring", _args())
    topic, policy = monitoring.topic, monitoring.topic_policy

    def check(values):
        urn, key, tags, topic_arn, policy_urn, policy_arn, doc = values
        assert key == KEY, f"{urn}: kms_master_key_id {key!r} (SNS.1)"
        assert tags == TAGS, f"{urn}: tags {tags!r}"
        assert policy_arn == topic_arn, f"{policy_urn}: attached to {policy_arn!r}"
        statements = json.loads(doc)["Statement"]
        allows = [s for s in statements if s["Effect"] == "Allow"]
        assert allows, f"{policy_urn}: no Allow statement, alarms could not publish"
        for s in allows:
            principal = s["Principal"]
            assert principal != "*" and "*" not in json.dumps(principal), (
                f"{policy_urn}: public principal {principal!r} (CKV_AWS_169)"
            )
            assert principal == {"Service": "cloudwatch.amazonaws.com"}, f"{policy_urn}: {s!r}"
            assert s["Action"] == "sns:Publish", f"{policy_urn}: action {s['Action']!r}"
            assert s["Resource"] == topic_arn, f"{policy_urn}: resource {s['Resource']!r}"
            cond = s["Condition"]
            assert cond["StringEquals"]["aws:SourceAccount"] == ACCOUNT, f"{policy_urn}: {cond!r}"
            assert cond["ArnLike"]["aws:SourceArn"] == ALARM_SOURCE, f"{policy_urn}: {cond!r}"

    return pulumi.Output.all(
        topic.urn,
        topic.kms_master_key_id,
        topic.tags,
        topic.arn,
        policy.urn,
        policy.arn,
        policy.policy,
    ).apply(check)


@pulumi.runtime.test
def test_each_email_is_subscribed_to_the_topic():
    monitoring = Monitoring("monitoring", _args())

    def check(values):
        topic_arn, *subs = values
        endpoints = sorted(endpoint for _, protocol, endpoint, _ in subs)
        assert endpoints == sorted(EMAILS), f"subscribed endpoints {endpoints!r}"
        for urn, protocol, _, topic in subs:
            assert protocol == "email", f"{urn}: protocol {protocol!r}"
            assert topic == topic_arn, f"{urn}: topic {topic!r}"

    return pulumi.Output.all(
        monitoring.topic.arn,
        *[
            pulumi.Output.all(s.urn, s.protocol, s.endpoint, s.topic)
            for s in monitoring.subscriptions
        ],
    ).apply(check)


@pulumi.runtime.test
def test_each_models_lambda_alarms_use_anomaly_detection_bands_on_its_live_alias():
    monitoring = Monitoring("monitoring", _args())
    keys = {f"{m}-{k}" for m in ("churn", "fraud") for k in LAMBDA_ALARMS}
    assert keys <= set(monitoring.alarms), sorted(monitoring.alarms)

    def check_alarm(model, key, alarm):
        metric_name, comparison, missing = LAMBDA_ALARMS[key]

        def check(values):
            urn, topic_arn, queries, threshold_id, op, enabled, actions, ok, treat, static = values
            assert enabled is True, f"{urn}: actions_enabled {enabled!r} (CloudWatch.17)"
            assert actions == [topic_arn], f"{urn}: alarm_actions {actions!r}"
            assert ok == [topic_arn], f"{urn}: ok_actions {ok!r}"
            assert op == comparison, f"{urn}: comparison_operator {op!r}"
            assert treat == missing, f"{urn}: treat_missing_data {treat!r}"
            assert static is None, f"{urn}: a band alarm has no static threshold, got {static!r}"
            by_id = {q["id"]: q for q in queries}
            band = by_id.get(threshold_id)
            assert band is not None, f"{urn}: threshold_metric_id {threshold_id!r} not in {by_id}"
            assert band["expression"] == "ANOMALY_DETECTION_BAND(m1, 2)", (
                f"{urn}: band expression {band.get('expression')!r}"
            )
            metric = by_id["m1"]["metric"]
            assert metric["namespace"] == "AWS/Lambda", f"{urn}: {metric!r}"
            assert metric["metric_name"] == metric_name, f"{urn}: metric {metric!r}"
            assert metric["dimensions"] == {
                "FunctionName": f"tandem-dev-{model}-serve",
                "Resource": f"tandem-dev-{model}-serve:live",
            }, f"{urn}: dimensions {metric['dimensions']!r}: not model {model}'s function"
            assert all(q.get("return_data") for q in queries), f"{urn}: {queries!r}"

        return pulumi.Output.all(
            alarm.urn,
            monitoring.topic.arn,
            _plain(alarm.metric_queries),
            alarm.threshold_metric_id,
            alarm.comparison_operator,
            alarm.actions_enabled,
            alarm.alarm_actions,
            alarm.ok_actions,
            alarm.treat_missing_data,
            alarm.threshold,
        ).apply(check)

    return pulumi.Output.all(
        *[
            check_alarm(m, k, monitoring.alarms[f"{m}-{k}"])
            for m in ("churn", "fraud")
            for k in LAMBDA_ALARMS
        ]
    )


@pulumi.runtime.test
def test_model_alarms_watch_drift_and_quality_per_model_dimension():
    monitoring = Monitoring("monitoring", _args(drift_max=0.25, quality_min=0.8))
    expected = {
        "drift": ("drift_score", "GreaterThanThreshold", 0.25, "Maximum"),
        "quality": ("model_quality", "LessThanThreshold", 0.8, "Minimum"),
    }

    def check_alarm(model, kind, alarm):
        metric_name, comparison, limit, stat = expected[kind]

        def check(values):
            (
                urn,
                topic_arn,
                ns,
                name,
                dims,
                op,
                threshold,
                statistic,
                enabled,
                actions,
                ok,
                treat,
            ) = values
            assert ns == "Tandem", f"{urn}: namespace {ns!r}"
            assert name == metric_name, f"{urn}: metric_name {name!r}"
            assert dims == {"Model": model}, (
                f"{urn}: dimensions {dims!r}; alarms watch {{Model}} since Version changes"
            )
            assert op == comparison, f"{urn}: comparison_operator {op!r}"
            assert threshold == limit, f"{urn}: threshold {threshold!r}"
            assert statistic == stat, f"{urn}: statistic {statistic!r}"
            assert enabled is True, f"{urn}: actions_enabled {enabled!r}"
            assert actions == [topic_arn] and ok == [topic_arn], f"{urn}: {actions!r} {ok!r}"
            assert treat == "notBreaching", f"{urn}: treat_missing_data {treat!r}"

        return pulumi.Output.all(
            alarm.urn,
            monitoring.topic.arn,
            alarm.namespace,
            alarm.metric_name,
            alarm.dimensions,
            alarm.comparison_operator,
            alarm.threshold,
            alarm.statistic,
            alarm.actions_enabled,
            alarm.alarm_actions,
            alarm.ok_actions,
            alarm.treat_missing_data,
        ).apply(check)

    checks = [
        check_alarm(model, kind, monitoring.alarms[f"{model}-{kind}"])
        for model in ("churn", "fraud")
        for kind in expected
    ]
    return pulumi.Output.all(*checks)


@pulumi.runtime.test
def test_alarm_names_list_every_alarm_under_the_prefix():
    monitoring = Monitoring("monitoring", _args())
    names = monitoring.alarm_names
    assert len(names) == 2 * (len(LAMBDA_ALARMS) + 2), names
    assert all(n.startswith("tandem-dev-") for n in names), names

    def check(created):
        assert sorted(created) == sorted(names), f"alarm_names {names!r} != alarms {created!r}"

    return pulumi.Output.all(*[a.name for a in monitoring.alarms.values()]).apply(check)


@pulumi.runtime.test
def test_idle_stacks_can_turn_off_the_no_traffic_alarm():
    monitoring = Monitoring("monitoring", _args(alert_on_no_traffic=False))
    alarm = monitoring.alarms["churn-lambda-invocations-drop"]

    def check(values):
        urn, treat = values
        assert treat == "notBreaching", f"{urn}: treat_missing_data {treat!r}"

    return pulumi.Output.all(alarm.urn, alarm.treat_missing_data).apply(check)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": []}, "at least one model"),
        ({"alarm_emails": ["not-an-email"]}, "is not an email"),
        ({"alarm_emails": ["oncall@example.com\n"]}, "is not an email"),
        ({"lambda_period_seconds": 90}, "multiple of 60"),
        ({"quality_min": 1.5}, r"quality_min=1.5 must be in \(0, 1\]"),
        ({"drift_max": 0}, "drift_max=0 must be > 0"),
        ({"anomaly_band_width": -1.0}, "anomaly_band_width"),
        ({"kms_key_arn": "alias/aws/sns"}, "kms_key_arn must be an ARN"),
        ({"functions": {"other": "tandem-dev-other-serve"}}, r"not in models: \['other'\]"),
    ],
)
def test_bad_args_raise_a_clear_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        Monitoring("monitoring", _args(**overrides))
