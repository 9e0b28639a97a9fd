"""SageMakerModelRegistry against moto: versions assigned by SageMaker, statuses mapped to
SageMaker's, the S3 side record. (The state machine every registry follows is in
tests/contract/test_registry.py.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ml.clouds.aws import SageMakerModelRegistry
from ml.clouds.base import Stack
from ml.errors import InvalidTransitionError, NotFoundError
from tests.integration.aws_fixtures import calls, client


def test_versions_are_assigned_by_sagemaker_and_consecutive(
    stack: Stack, outputs: dict[str, Any], stored_uri: str
) -> None:
    created = [
        stack.registry.create_version(
            "credit", stored_uri, {"roc_auc": 0.8 + i / 100}, {"run_id": f"r{i}"}
        )
        for i in range(3)
    ]
    assert [v.version for v in created] == [1, 2, 3]
    assert all(v.status == "pending" for v in created)
    sagemaker = client("sagemaker")
    group = outputs["model_package_groups"]["credit"]
    packages = sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert sorted(p["ModelPackageVersion"] for p in packages) == [1, 2, 3]
    described = sagemaker.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    container = described["InferenceSpecification"]["Containers"][0]
    # the serving image (SageMaker hosting runs `serve`), not the training image
    assert container["Image"] == outputs["serving_image_uri"] != outputs["training_image_uri"]
    assert container["ModelDataUrl"] == f"{stored_uri}/model.tar.gz"
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == (
        f"{stored_uri}/model_card.json"
    )
    record = json.loads(stack.store.get_bytes("registry/credit/v2.json"))
    assert record["artifact_uri"] == stored_uri
    assert record["metrics"] == {"roc_auc": 0.81}
    assert record["tags"] == {"run_id": "r1"}
    got = stack.registry.get_version("credit", 2)
    assert (got.metrics, got.tags, got.artifact_uri) == (
        {"roc_auc": 0.81},
        {"run_id": "r1"},
        stored_uri,
    )
    assert [v.version for v in stack.registry.list_versions("credit")] == [1, 2, 3]
    assert stack.registry.list_models() == ["credit"]


def test_status_mapping_and_transitions(
    stack: Stack, outputs: dict[str, Any], stored_uri: str
) -> None:
    registry = stack.registry
    for _ in range(3):
        registry.create_version("credit", stored_uri, {}, {})
    sagemaker = client("sagemaker")

    def sagemaker_status(version: int) -> dict[str, Any]:
        group = outputs["model_package_groups"]["credit"]
        arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/{version}"
        return sagemaker.describe_model_package(ModelPackageName=arn)

    assert registry.set_status("credit", 1, "approved", "gates passed").status == "approved"
    assert sagemaker_status(1)["ModelApprovalStatus"] == "Approved"
    assert registry.set_status("credit", 2, "rejected", "auc too low").status == "rejected"
    assert sagemaker_status(2)["ModelApprovalStatus"] == "Rejected"
    with pytest.raises(InvalidTransitionError, match="pending to archived"):
        registry.set_status("credit", 3, "archived")
    with pytest.raises(InvalidTransitionError, match="rejected to approved"):
        registry.set_status("credit", 2, "approved")
    with pytest.raises(InvalidTransitionError, match="unknown status"):
        registry.set_status("credit", 3, "live")
    # same status: a no-op, the reason kept
    assert registry.set_status("credit", 1, "approved", "again").status_reason == "gates passed"

    archived = registry.set_status("credit", 1, "archived", "rolled back")
    assert (archived.status, archived.status_reason) == ("archived", "rolled back")
    described = sagemaker_status(1)
    assert described["ModelApprovalStatus"] == "Rejected"  # nothing SageMaker-native deploys it
    assert described["ApprovalDescription"] == "rolled back"
    with pytest.raises(InvalidTransitionError, match="archived to approved"):
        registry.set_status("credit", 1, "approved")
    statuses = [(v.version, v.status, v.status_reason) for v in registry.list_versions("credit")]
    assert statuses == [
        (1, "archived", "rolled back"),
        (2, "rejected", "auc too low"),
        (3, "pending", ""),
    ]
    assert json.loads(stack.store.get_bytes("registry/credit/v1.json"))["status"] == "archived"


def test_sagemaker_is_the_source_of_truth_for_status(
    stack: Stack, outputs: dict[str, Any], stored_uri: str
) -> None:
    stack.registry.create_version("credit", stored_uri, {}, {})
    group = outputs["model_package_groups"]["credit"]
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/1"
    # approved in SageMaker directly (console, another tool): the record still says pending
    client("sagemaker").update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    assert stack.registry.get_version("credit", 1).status == "approved"


def test_a_version_without_its_record_still_reads(
    stack: Stack, outputs: dict[str, Any], stored_uri: str
) -> None:
    stack.registry.create_version("credit", stored_uri, {"roc_auc": 0.9}, {"run_id": "r"})
    client("s3").delete_object(Bucket=outputs["models_bucket"], Key="registry/credit/v1.json")
    version = stack.registry.get_version("credit", 1)
    assert version.artifact_uri == stored_uri  # from the package's metadata / ModelDataUrl
    assert version.status == "pending"


def test_unknown_models_and_versions(stack: Stack, stored_uri: str) -> None:
    with pytest.raises(NotFoundError, match=r"'fraud'.*configured: churn, credit"):
        stack.registry.create_version("fraud", stored_uri, {}, {})
    with pytest.raises(NotFoundError, match="configured: churn, credit"):
        stack.registry.get_version("fraud", 1)
    assert stack.registry.list_versions("fraud") == []
    with pytest.raises(NotFoundError, match="no version 7"):
        stack.registry.get_version("credit", 7)
    assert stack.registry.list_models() == []


def test_metadata_respects_sagemaker_limits(stack: Stack, stored_uri: str) -> None:
    registry = stack.registry
    assert isinstance(registry, SageMakerModelRegistry)
    sent = calls(registry.sagemaker, "CreateModelPackage")
    metrics = {f"m{i}": float(i) for i in range(60)}
    tags = {"long": "x" * 1000, "odd key!": "v"}
    registry.create_version("credit", stored_uri, metrics, tags)
    properties = sent[0]["CustomerMetadataProperties"]
    assert len(properties) <= 50
    assert all(1 <= len(v) <= 256 and 1 <= len(k) <= 128 for k, v in properties.items())
    assert registry.get_version("credit", 1).metrics == metrics  # the record holds them all
    assert registry.get_version("credit", 1).tags == tags
