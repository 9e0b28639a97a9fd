"""Traffic moves for real: canary, promote-canary, rollback and the smoke request after each
shift, observed through the endpoint's own entry point (`EndpointTarget.invoke`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from ml import artifact, lifecycle
from ml.clouds.base import APPROVED, ARCHIVED, ModelVersion, Stack
from ml.errors import TandemError
from tests.contract.conftest import MODEL, Cloud, feature_rows, store_artifact


def answered_by(stack: Stack, route: str | None = None) -> int:
    return stack.endpoint.invoke(MODEL, feature_rows(1), route=route)["version"]


def test_a_canary_takes_its_share_and_the_primary_keeps_the_rest(
    stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    v1, v2 = approved(), approved()
    lifecycle.deploy(stack, MODEL, v1.version)
    canary = lifecycle.deploy(stack, MODEL, v2.version, canary_weight=0.25)
    assert (canary.version, canary.canary_weight) == (v2.version, 0.25)
    assert answered_by(stack, "canary") == v2.version
    assert answered_by(stack, "live") == v1.version


def test_promote_canary_sends_all_traffic_to_it(
    stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    v1, v2 = approved(), approved()
    lifecycle.deploy(stack, MODEL, v1.version)
    with pytest.raises(TandemError, match="no canary is running"):
        lifecycle.promote_canary(stack, MODEL)
    lifecycle.deploy(stack, MODEL, v2.version, canary_weight=0.1)
    promoted = lifecycle.promote_canary(stack, MODEL)
    assert (promoted.version, promoted.canary_weight) == (v2.version, None)
    assert {answered_by(stack) for _ in range(3)} == {v2.version}
    assert answered_by(stack, "live") == v2.version


def test_rolling_back_a_canary_archives_it_and_gives_the_traffic_back(
    stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    v1, v2, v3 = approved(), approved(), approved()
    lifecycle.deploy(stack, MODEL, v2.version)
    lifecycle.deploy(stack, MODEL, v3.version, canary_weight=0.5)
    back = lifecycle.rollback(stack, MODEL, "canary errors")
    assert (back.version, back.canary_weight) == (v2.version, None)  # its primary, not v1
    assert stack.registry.get_version(MODEL, v3.version).status == ARCHIVED
    assert stack.registry.get_version(MODEL, v1.version).status == APPROVED
    assert {answered_by(stack) for _ in range(3)} == {v2.version}


def test_a_version_that_fails_its_smoke_request_is_taken_out_again(
    stack: Stack, approved: Callable[[], ModelVersion], artifact_dir: Path, tmp_path: Path
) -> None:
    v1 = approved()
    lifecycle.deploy(stack, MODEL, v1.version)
    # a model onnxruntime cannot load, sealed with a correct manifest: it passes every
    # integrity check a deploy makes and fails only when it must answer
    broken = tmp_path / "broken"
    shutil.copytree(artifact_dir, broken)
    (broken / artifact.ONNX).write_bytes(b"\x08\x07not an onnx graph")
    artifact.seal(broken)
    uri = store_artifact(stack, broken, "run-broken")
    bad = stack.registry.create_version(MODEL, uri, {"roc_auc": 0.9}, {"run_id": "run-broken"})
    stack.registry.set_status(MODEL, bad.version, APPROVED, "gates passed")

    for canary in (None, 0.2):
        with pytest.raises(lifecycle.SmokeTestError, match=f"v{bad.version} failed its smoke"):
            lifecycle.deploy(stack, MODEL, bad.version, canary_weight=canary)
        current = stack.endpoint.current(MODEL)
        assert (current.version, current.canary_weight) == (v1.version, None)
        assert answered_by(stack) == v1.version


def test_each_model_has_its_own_endpoint(
    cloud: Cloud, stack: Stack, approved: Callable[[], ModelVersion], artifact_dir: Path
) -> None:
    """Deploying or rolling back one model never changes what another model's endpoint serves."""
    other = cloud.second_model
    uri = stack.store.put_artifact(artifact_dir, f"artifacts/{other}/run-1")
    o1 = stack.registry.create_version(other, uri, {"roc_auc": 0.8}, {"run_id": "run-1"})
    stack.registry.set_status(other, o1.version, APPROVED, "gates passed")
    lifecycle.deploy(stack, other, o1.version)
    v1, v2 = approved(), approved()
    lifecycle.deploy(stack, MODEL, v1.version)
    lifecycle.deploy(stack, MODEL, v2.version)
    lifecycle.rollback(stack, MODEL)
    assert answered_by(stack) == v1.version
    answer = stack.endpoint.invoke(other, feature_rows(2))
    assert (answer["model"], answer["version"]) == (other, o1.version)
    assert stack.endpoint.current(other).version == o1.version
