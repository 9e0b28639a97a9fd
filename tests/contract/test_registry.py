"""ModelRegistry: versions assigned by the registry, and one state machine on every stack."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ml.clouds.base import APPROVED, ARCHIVED, PENDING, REJECTED, STATUSES, TRANSITIONS, Stack
from ml.errors import InvalidTransitionError, NotFoundError
from tests.contract.conftest import MODEL, store_artifact

# the way into each status from `pending`
PATH_TO = {PENDING: [], APPROVED: [APPROVED], REJECTED: [REJECTED], ARCHIVED: [APPROVED, ARCHIVED]}


@pytest.fixture
def uri(stack: Stack, artifact_dir: Path) -> str:
    return store_artifact(stack, artifact_dir, "run-1")


def test_versions_are_consecutive_from_one_and_start_pending(stack: Stack, uri: str) -> None:
    registry = stack.registry
    assert registry.list_models() == []
    assert registry.list_versions(MODEL) == []
    created = [
        registry.create_version(MODEL, uri, {"roc_auc": 0.8 + i / 100}, {"run_id": f"r{i}"})
        for i in range(3)
    ]
    assert [v.version for v in created] == [1, 2, 3]
    assert {(v.model, v.status, v.artifact_uri) for v in created} == {(MODEL, PENDING, uri)}
    assert registry.list_versions(MODEL) == created  # oldest first
    assert registry.list_models() == [MODEL]
    second = registry.get_version(MODEL, 2)
    assert second == created[1]
    assert (second.metrics, second.tags) == ({"roc_auc": 0.81}, {"run_id": "r1"})
    with pytest.raises(NotFoundError, match="no version 4"):
        registry.get_version(MODEL, 4)


def test_every_status_change_follows_the_one_state_machine(stack: Stack, uri: str) -> None:
    registry = stack.registry
    for source, target in itertools.product(STATUSES, STATUSES):
        version = registry.create_version(MODEL, uri, {}, {}).version
        for step in PATH_TO[source]:
            registry.set_status(MODEL, version, step, f"to {step}")
        case = f"{source} -> {target}"
        if target == source:  # a no-op that keeps the reason it had
            before = registry.get_version(MODEL, version)
            assert registry.set_status(MODEL, version, target, "again") == before, case
            assert registry.get_version(MODEL, version) == before, case
        elif target in TRANSITIONS[source]:
            moved = registry.set_status(MODEL, version, target, "why")
            assert (moved.status, moved.status_reason) == (target, "why"), case
        else:
            refused = f"{MODEL} v{version}: cannot go from {source} to {target}"
            with pytest.raises(InvalidTransitionError, match=refused):
                registry.set_status(MODEL, version, target, "why")
            assert registry.get_version(MODEL, version).status == source, case
        assert registry.get_version(MODEL, version).status == (
            target if target in TRANSITIONS[source] else source
        ), case


def test_an_unknown_status_is_refused(stack: Stack, uri: str) -> None:
    stack.registry.create_version(MODEL, uri, {}, {})
    with pytest.raises(InvalidTransitionError, match="unknown status 'live'"):
        stack.registry.set_status(MODEL, 1, "live")
    assert stack.registry.get_version(MODEL, 1).status == PENDING


def test_status_of_a_version_that_does_not_exist(stack: Stack) -> None:
    with pytest.raises(NotFoundError):
        stack.registry.set_status(MODEL, 1, APPROVED)
