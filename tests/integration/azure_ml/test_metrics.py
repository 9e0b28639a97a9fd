"""AzureMonitorMetricsSink against the Azure Monitor fake: the API's documents, its limits
checked before anything is sent, batches, a refusal raised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contract.metrics import DRIFT_SCORE, MODEL_QUALITY, dimensions
from ml.clouds.azure.common import AzureOutputs, PlaceholderCredential
from ml.clouds.azure.metrics import AzureMonitorMetricsSink, metrics_url
from ml.clouds.base import MetricPoint
from ml.errors import TandemError
from tests.azure_fakes import AzureFake


def sink(cfg: AzureOutputs, **kwargs) -> AzureMonitorMetricsSink:
    return AzureMonitorMetricsSink(cfg, PlaceholderCredential(), **kwargs)


def test_points_become_the_apis_documents_on_the_stacks_resource(
    cfg: AzureOutputs, fake: AzureFake
) -> None:
    now = datetime.now(UTC).replace(second=30)
    v3 = dimensions("credit", 3)
    sink(cfg).emit([
        MetricPoint(MODEL_QUALITY, 0.81, v3, timestamp=now.isoformat()),
        MetricPoint(DRIFT_SCORE, 0.1, v3, timestamp=now.isoformat()),
        MetricPoint(DRIFT_SCORE, 0.3, v3, timestamp=(now + timedelta(seconds=5)).isoformat()),
        MetricPoint(DRIFT_SCORE, 0.2, dimensions("credit", 4), timestamp=now.isoformat()),
    ])  # fmt: skip
    [post] = fake.metric_posts
    assert post["resource_id"] == cfg.metrics_resource_id
    assert post["content_type"] == "application/x-ndjson"
    minute = now.replace(second=0, microsecond=0).isoformat().replace("+00:00", "Z")
    drift = next(d for d in post["documents"] if d["data"]["baseData"]["metric"] == DRIFT_SCORE)
    assert drift["time"] == minute
    assert drift["data"]["baseData"]["namespace"] == cfg.metric_namespace
    assert drift["data"]["baseData"]["dimNames"] == ["Model", "Version"]
    # one series per dimension values, aggregated over the minute; each point sent once
    aggregated = {"min": 0.1, "max": 0.3, "sum": pytest.approx(0.4), "count": 2}
    assert drift["data"]["baseData"]["series"] == [
        {"dimValues": ["credit", "3"], **aggregated},
        {"dimValues": ["credit", "4"], "min": 0.2, "max": 0.2, "sum": 0.2, "count": 1},
    ]
    assert sum(p["count"] for p in fake.points) == 4
    assert fake.operations() == [("POST", "{resource_id}/metrics")]


def test_one_document_goes_as_json_and_nothing_to_send_sends_nothing(
    cfg: AzureOutputs, fake: AzureFake
) -> None:
    sink(cfg).emit([])
    assert fake.metric_posts == []
    sink(cfg).emit([MetricPoint(MODEL_QUALITY, 0.8, dimensions("credit", 1))])
    assert [p["content_type"] for p in fake.metric_posts] == ["application/json"]


def test_batches_stay_within_a_request_and_carry_every_point(
    cfg: AzureOutputs, fake: AzureFake
) -> None:
    points = [MetricPoint(f"metric_{i}", float(i), dimensions("credit", 1)) for i in range(40)]
    sink(cfg, request_bytes=2_000).emit(points)
    assert len(fake.metric_posts) > 1
    assert sorted(p["metric"] for p in fake.points) == sorted(p.name for p in points)


@pytest.mark.parametrize(
    ("point", "says"),
    [
        (MetricPoint("m", float("nan")), "refuses the value nan"),
        (MetricPoint("m", 1.0, {f"d{i}": "x" for i in range(11)}), "11 dimensions"),
        (MetricPoint("m", 1.0, {"Model": "x" * 257}), "dimension 'Model'"),
        (MetricPoint("m" * 257, 1.0), "1-256 characters"),
        (MetricPoint("m", 1.0, timestamp="2020-01-01T00:00:00+00:00"), "outside what Azure"),
        # nine minutes ahead of when the test runs (not of when it was collected)
        (MetricPoint("m", 1.0, timestamp="+9min"), "outside what Azure"),
    ],
)
def test_a_point_outside_the_apis_limits_sends_nothing(
    cfg: AzureOutputs, fake: AzureFake, point: MetricPoint, says: str
) -> None:
    if point.timestamp == "+9min":
        ahead = (datetime.now(UTC) + timedelta(minutes=9)).isoformat()
        point = MetricPoint(point.name, point.value, timestamp=ahead)
    good = MetricPoint(MODEL_QUALITY, 0.8, dimensions("credit", 1))
    with pytest.raises(TandemError, match=says):
        sink(cfg).emit([good, point])
    assert fake.metric_posts == []


def test_a_refusal_raises_with_the_services_reason(cfg: AzureOutputs, fake: AzureFake) -> None:
    fake.fail("POST", "/metrics", 403, "AuthorizationFailed", "lacks Monitoring Metrics Publisher")
    with pytest.raises(
        TandemError, match=r"Azure Monitor refused 1 .*Monitoring Metrics Publisher"
    ):
        sink(cfg).emit([MetricPoint(MODEL_QUALITY, 0.8, dimensions("credit", 1))])


def test_the_regional_endpoint_in_the_cloud_and_the_emulator_under_test(
    outputs: dict, fake: AzureFake
) -> None:
    cloud = AzureOutputs.parse(outputs | {"management_url": None, "location": "West Europe"})
    resource = cloud.metrics_resource_id
    assert metrics_url(cloud) == f"https://westeurope.monitoring.azure.com{resource}/metrics"
    assert metrics_url(AzureOutputs.parse(outputs)) == f"{fake.url}{resource}/metrics"
