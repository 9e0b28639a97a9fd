"""Alerting: an encrypted SNS topic that only this account's CloudWatch alarms may
publish to, email subscriptions, and the alarms.

Alarms on each model's inference Lambda (its ``live`` alias: latency, errors,
throttles, a traffic drop) use CloudWatch anomaly detection bands, because "normal"
latency, error and traffic levels differ per model and per hour
of the week; a fixed threshold would be either noisy or blind:
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/Create_Anomaly_Detection_Alarm.html

Alarms on Tandem's own metrics (namespace ``Tandem``: ``drift_score``, ``model_quality``)
use fixed thresholds, since their scales are known. An alarm watches one exact dimension
set and cannot use a ``SEARCH`` expression
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/using-search-expressions.html),
so a per-model alarm cannot follow a ``Version`` dimension that changes with each deploy.
Therefore the metrics sink emits every point twice: with dimensions ``{Model, Version}``
(dashboards, per-version forensics) and with ``{Model}`` (what these alarms watch).

The topic's KMS key must let CloudWatch use it (``policies.kms_key_policy`` with
``allow_cloudwatch_alarms``), otherwise alarms fire and no notification is delivered:
https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
from pulumi import Input, Output, ResourceOptions

from contract import metrics, serving
from infra.aws._checks import check_arn
from infra.aws.names import AwsNames
from infra.aws.policies import alarms_arn
from infra.common.checks import check_emails, check_models, check_name_prefix

CLOUDWATCH_PRINCIPAL = "cloudwatch.amazonaws.com"


def alarm_topic_policy(
    topic_arn: str, account_id: str, region: str, name_prefix: str, partition: str = "aws"
) -> dict[str, Any]:
    """Topic policy: only CloudWatch alarms of this account (named ``<prefix>-*``) may
    publish; nothing is granted to ``*``. Same-account administration goes through IAM.

    Conditions from https://docs.aws.amazon.com/sns/latest/dg/sns-access-policy-use-cases.html
    """
    alarms = alarms_arn(region, account_id, AwsNames(name_prefix).alarm_pattern, partition)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CloudWatchAlarmsOfThisAccountPublish",
                "Effect": "Allow",
                "Principal": {"Service": CLOUDWATCH_PRINCIPAL},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnLike": {"aws:SourceArn": alarms},
                },
            }
        ],
    }


@dataclass
class MonitoringArgs:
    """Inputs of the alerting component.

    name_prefix: stack-wide prefix; every alarm is ``<prefix>-...``.
    kms_key_arn: the stack's customer-managed key; encrypts the topic.
    functions: each model's inference Lambda (``Serving.endpoints[model].function.name``);
        its alarms are ``<model>-lambda-<what>``.
    models: models whose drift and quality are alarmed (one pair of alarms each).
    alias_name: the Lambda alias the traffic goes to (``Serving``'s ``live``).
    alarm_emails: addresses subscribed to the topic (each must confirm by email).
    drift_max: alarm when a model's ``drift_score`` (PSI-like, >= 0) exceeds this.
    quality_min: alarm when a model's ``model_quality`` (higher is better, in [0, 1])
        falls below this.
    anomaly_band_width: width of the anomaly detection band, in standard deviations.
    lambda_period_seconds, lambda_evaluation_periods: how the Lambda alarms sample.
    model_metric_period_seconds: period of the model alarms; at least the interval at
        which the monitoring job emits drift/quality points.
    alert_on_no_traffic: no Invocations data at all counts as a traffic drop (breaching).
        Turn off for stacks that are idle on purpose, or the alarm stays in ALARM.
    tags: applied to every resource.
    """

    name_prefix: str
    kms_key_arn: Input[str]
    functions: dict[str, Input[str]]
    models: list[str]
    alias_name: str = serving.LIVE_ALIAS
    alarm_emails: list[str] = field(default_factory=list)
    drift_max: float = 0.2
    quality_min: float = 0.7
    anomaly_band_width: float = 2.0
    lambda_period_seconds: int = 300
    lambda_evaluation_periods: int = 3
    model_metric_period_seconds: int = 3600
    alert_on_no_traffic: bool = True
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        check_name_prefix("Monitoring", self.name_prefix)
        check_arn("Monitoring", "kms_key_arn", self.kms_key_arn)
        check_models("Monitoring", self.models)
        unknown = sorted(set(self.functions) - set(self.models))
        if unknown:
            raise ValueError(f"Monitoring: functions of models not in models: {unknown}")
        check_emails("Monitoring", "alarm_emails", self.alarm_emails)
        if not self.drift_max > 0:
            raise ValueError(f"Monitoring: drift_max={self.drift_max!r} must be > 0")
        if not 0 < self.quality_min <= 1:
            raise ValueError(f"Monitoring: quality_min={self.quality_min!r} must be in (0, 1]")
        if not self.anomaly_band_width > 0:
            raise ValueError(
                f"Monitoring: anomaly_band_width={self.anomaly_band_width!r} must be > 0"
            )
        # Standard-resolution metrics are aggregated per minute, so periods are multiples
        # of 60 s: https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html
        for name in ("lambda_period_seconds", "model_metric_period_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 60 or value % 60:
                raise ValueError(f"Monitoring: {name}={value!r} must be a multiple of 60")
        if not 1 <= self.lambda_evaluation_periods <= 10:
            raise ValueError(
                "Monitoring: lambda_evaluation_periods must be between 1 and 10, got "
                f"{self.lambda_evaluation_periods!r}"
            )


class Monitoring(pulumi.ComponentResource):
    """SNS alarm topic + subscriptions + anomaly-band and threshold alarms.

    ``alarms`` maps a short key (``<model>-lambda-duration``, ``<model>-drift``, ...) to the
    alarm;
    ``alarm_names`` lists their names (plain strings, known at preview).
    """

    topic: aws.sns.Topic
    topic_policy: aws.sns.TopicPolicy
    subscriptions: list[aws.sns.TopicSubscription]
    alarms: dict[str, aws.cloudwatch.MetricAlarm]
    alarm_names: list[str]

    def __init__(
        self, name: str, args: MonitoringArgs, opts: ResourceOptions | None = None
    ) -> None:
        args.validate()
        super().__init__("tandem:aws:Monitoring", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)
        account_id = aws.get_caller_identity_output(opts=invoke_opts).account_id
        region = aws.get_region_output(opts=invoke_opts).region
        partition = aws.get_partition_output(opts=invoke_opts).partition

        self.topic = aws.sns.Topic(
            f"{name}-alarms",
            name=AwsNames(args.name_prefix).alarm_topic,
            kms_master_key_id=args.kms_key_arn,
            tags=args.tags,
            opts=child_opts,
        )
        self.topic_policy = aws.sns.TopicPolicy(
            f"{name}-alarms-policy",
            arn=self.topic.arn,
            policy=Output.all(self.topic.arn, account_id, region, partition).apply(
                lambda v: json.dumps(
                    alarm_topic_policy(v[0], v[1], v[2], args.name_prefix, partition=v[3])
                )
            ),
            opts=child_opts,
        )
        self.subscriptions = [
            aws.sns.TopicSubscription(
                f"{name}-email-{email}",
                topic=self.topic.arn,
                protocol="email",
                endpoint=email,
                opts=child_opts,
            )
            for email in args.alarm_emails
        ]

        self.alarms = {}
        for model, function_name in args.functions.items():
            self._lambda_alarms(name, model, function_name, args, child_opts)
        self._model_alarms(name, args, child_opts)
        self.alarm_names = [AwsNames(args.name_prefix).alarm(key) for key in self.alarms]

        self.register_outputs({"topic_arn": self.topic.arn, "alarm_names": self.alarm_names})

    def _alarm(
        self,
        name: str,
        key: str,
        args: MonitoringArgs,
        child_opts: ResourceOptions,
        **kwargs: Any,
    ) -> None:
        """One alarm with the settings every alarm shares (CKV_AWS_319 / CloudWatch.17)."""
        self.alarms[key] = aws.cloudwatch.MetricAlarm(
            f"{name}-{key}",
            name=AwsNames(args.name_prefix).alarm(key),
            actions_enabled=True,
            alarm_actions=[self.topic.arn],
            ok_actions=[self.topic.arn],
            tags=args.tags,
            opts=child_opts,
            **kwargs,
        )

    def _lambda_alarms(
        self,
        name: str,
        model: str,
        function_name: Input[str],
        args: MonitoringArgs,
        child_opts: ResourceOptions,
    ) -> None:
        # Lambda publishes per-alias metrics under {FunctionName, Resource="<fn>:<alias>"}:
        # https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html#monitoring-metrics-dimensions
        dimensions = {
            "FunctionName": function_name,
            "Resource": Output.concat(function_name, ":", args.alias_name),
        }
        specs = [
            # key, metric, statistic, comparison, treat_missing_data (and why)
            (
                "lambda-duration",
                "Duration",
                "p90",
                "GreaterThanUpperThreshold",
                # No invocations means no latency to worry about.
                "notBreaching",
            ),
            (
                "lambda-errors",
                "Errors",
                "Sum",
                "GreaterThanUpperThreshold",
                # Lambda emits Errors only for invocations; no data means no errors.
                "notBreaching",
            ),
            (
                "lambda-throttles",
                "Throttles",
                "Sum",
                "GreaterThanUpperThreshold",
                # Throttled requests (reserved concurrency reached) count; none is no data.
                "notBreaching",
            ),
            (
                "lambda-invocations-drop",
                "Invocations",
                "Sum",
                "LessThanLowerThreshold",
                # Lambda emits no Invocations point for an idle period, so traffic that
                # drops to zero shows up as missing data, not as a low value.
                "breaching" if args.alert_on_no_traffic else "notBreaching",
            ),
        ]
        for key, metric, stat, comparison, missing in specs:
            self._alarm(
                name,
                f"{model}-{key}",
                args,
                child_opts,
                alarm_description=(
                    f"{metric} ({stat}) of model {model}'s inference Lambda ({args.alias_name} "
                    f"alias) left its anomaly detection band ({args.anomaly_band_width} "
                    "standard deviations)"
                ),
                comparison_operator=comparison,
                evaluation_periods=args.lambda_evaluation_periods,
                threshold_metric_id="band",
                treat_missing_data=missing,
                metric_queries=[
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="m1",
                        return_data=True,
                        metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                            namespace="AWS/Lambda",
                            metric_name=metric,
                            dimensions=dimensions,
                            stat=stat,
                            period=args.lambda_period_seconds,
                        ),
                    ),
                    # Both the metric and the band must return data for an anomaly alarm:
                    # https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="band",
                        expression=f"ANOMALY_DETECTION_BAND(m1, {args.anomaly_band_width:g})",
                        label=f"{metric} (expected)",
                        return_data=True,
                    ),
                ],
            )

    def _model_alarms(self, name: str, args: MonitoringArgs, child_opts: ResourceOptions) -> None:
        for model in args.models:
            common = {
                "namespace": metrics.NAMESPACE,
                # What the sink also emits without `Version` (the module docstring says why).
                "dimensions": metrics.dimensions(model),
                "period": args.model_metric_period_seconds,
                "evaluation_periods": 1,
                # Drift and quality are computed by a scheduled job, not continuously: an
                # hour without a point is no evidence of drift or of a worse model.
                "treat_missing_data": "notBreaching",
            }
            self._alarm(
                name,
                f"{model}-drift",
                args,
                child_opts,
                alarm_description=f"Input drift of model {model} above {args.drift_max:g}",
                metric_name=metrics.DRIFT_SCORE,
                statistic="Maximum",
                comparison_operator="GreaterThanThreshold",
                threshold=args.drift_max,
                **common,
            )
            self._alarm(
                name,
                f"{model}-quality",
                args,
                child_opts,
                alarm_description=f"Quality of model {model} below {args.quality_min:g}",
                metric_name=metrics.MODEL_QUALITY,
                statistic="Minimum",
                comparison_operator="LessThanThreshold",
                threshold=args.quality_min,
                **common,
            )
