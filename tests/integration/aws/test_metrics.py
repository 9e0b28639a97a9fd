"""CloudWatchMetricsSink against moto: batching, the alarm's dimension set, bad points."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from ml.clouds.base import MetricPoint, Stack
from ml.errors import TandemError
from tests.integration.aws_fixtures import calls, client


def test_metrics_are_batched_and_copied_to_the_alarm_dimensions(
    stack: Stack, outputs: dict[str, Any]
) -> None:
    sink = stack.metrics
    sent = calls(sink.cloudwatch, "PutMetricData")
    points = [
        MetricPoint(
            "model_quality",
            0.5 + (i % 10) / 100,
            {"Model": "credit", "Version": str(1 + i % 2)},
            timestamp="2026-11-27T09:00:00+00:00",
        )
        for i in range(2500)
    ]
    sink.emit(points)
    # 2500 points with a Version: 5000 metrics, at most 1000 per request
    assert [len(call["MetricData"]) for call in sent] == [1000] * 5
    assert all(call["Namespace"] == "Tandem" for call in sent)
    cloudwatch = client("cloudwatch")
    listed = cloudwatch.list_metrics(Namespace="Tandem", MetricName="model_quality")["Metrics"]
    # (moto lists a metric once per data point; CloudWatch once per dimension set)
    dimension_sets = sorted(
        {tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in listed}
    )
    assert dimension_sets == [
        (("Model", "credit"),),
        (("Model", "credit"), ("Version", "1")),
        (("Model", "credit"), ("Version", "2")),
    ]
    # the {Model} copy is exactly the series the stack's quality alarm watches
    alarm = cloudwatch.describe_alarms(AlarmNames=["tandem-dev-credit-quality"])["MetricAlarms"][0]
    assert alarm["Dimensions"] == [{"Name": "Model", "Value": "credit"}]
    model_only = [
        d for call in sent for d in call["MetricData"] if d["Dimensions"] == alarm["Dimensions"]
    ]
    assert len(model_only) == 2500
    assert math.isclose(sum(d["Value"] for d in model_only), sum(p.value for p in points))
    stats = cloudwatch.get_metric_statistics(
        Namespace="Tandem",
        MetricName="model_quality",
        Dimensions=[{"Name": "Model", "Value": "credit"}, {"Name": "Version", "Value": "2"}],
        StartTime=datetime(2026, 11, 27, 8, tzinfo=UTC),
        EndTime=datetime(2026, 11, 27, 10, tzinfo=UTC),
        Period=3600,
        Statistics=["SampleCount", "Sum", "Minimum"],
    )["Datapoints"]
    version_2 = [p.value for p in points if p.dimensions["Version"] == "2"]
    assert stats[0]["SampleCount"] == len(version_2) == 1250
    assert math.isclose(stats[0]["Sum"], sum(version_2))
    assert stats[0]["Minimum"] == min(version_2)


def test_a_bad_point_sends_nothing(stack: Stack) -> None:
    sent = calls(stack.metrics.cloudwatch, "PutMetricData")
    good = [MetricPoint("drift_score", 0.1, {"Model": "credit"}) for _ in range(1500)]
    with pytest.raises(TandemError, match="refuses the value nan"):
        stack.metrics.emit([*good, MetricPoint("drift_score", float("nan"), {"Model": "credit"})])
    with pytest.raises(TandemError, match="not a CloudWatch unit"):
        stack.metrics.emit([MetricPoint("drift_score", 1.0, {"Model": "credit"}, unit="Furlongs")])
    assert sent == []
    stack.metrics.emit([])
    assert sent == []
