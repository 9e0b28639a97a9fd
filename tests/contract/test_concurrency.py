"""Races every stack must survive: parallel callers, each with its own connection.

Local stacks race processes, emulated clouds threads (tests/contract/races.py). Bounded in
callers and rounds; no timing is asserted, only the state each round leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ml import lifecycle
from ml.clouds.base import APPROVED, ModelVersion, Stack
from ml.errors import TandemError
from tests.contract.conftest import MODEL, Cloud, store_artifact
from tests.contract.races import race

CALLERS = 6
ROUNDS = 10
COUNTER = "runs/credit/counter.txt"


# -- workers (module level: a spawned process imports them by name) ---------------------------
def register(stack: Stack, index: int, round_: int, uris: list[str]) -> int:
    return lifecycle.register(stack, MODEL, uris[index], {}, {"run_id": f"run-{index}"}).version


def increment_under_the_lock(stack: Stack, index: int, round_: int, times: int) -> int:
    for _ in range(times):
        with stack.locks.hold(MODEL):
            count = int(stack.store.get_bytes(COUNTER))
            stack.store.put_bytes(COUNTER, str(count + 1).encode())
    return times


def approve_deploy_or_roll_back(stack: Stack, index: int, round_: int, first: int) -> str:
    """Two callers approve a new version and deploy the champion, two deploy the champion,
    two roll back: what CI jobs and an operator may do to one model at the same moment."""
    try:
        if index % 3 == 0:
            lifecycle.approve(stack, MODEL, first + 2 * round_ + index // 3, "gates passed")
            return f"deployed v{lifecycle.deploy(stack, MODEL).version}"
        if index % 3 == 1:
            return f"deployed v{lifecycle.deploy(stack, MODEL).version}"
        return f"rolled back to v{lifecycle.rollback(stack, MODEL, f'round {round_}').version}"
    except TandemError as exc:  # refused (nothing older to roll back to, a conflict): fine
        return f"refused: {type(exc).__name__}: {exc}"


# -- the races -------------------------------------------------------------------------------
def test_concurrent_registrations_get_distinct_consecutive_versions(
    cloud: Cloud, stack: Stack, artifact_dir: Path
) -> None:
    uris = [store_artifact(stack, artifact_dir, f"run-{i}") for i in range(CALLERS)]
    [versions] = race(cloud.name, cloud.parallel, stack, register, CALLERS, args=(uris,))
    assert sorted(versions) == list(range(1, CALLERS + 1))
    stored = stack.registry.list_versions(MODEL)
    assert [v.version for v in stored] == list(range(1, CALLERS + 1))
    assert {stored[v - 1].artifact_uri for v in versions} == set(uris)
    assert all(stored[v - 1].artifact_uri == uris[i] for i, v in enumerate(versions))


def test_the_model_lock_serialises_changes_across_callers(cloud: Cloud, stack: Stack) -> None:
    stack.store.put_bytes(COUNTER, b"0")
    race(cloud.name, cloud.parallel, stack, increment_under_the_lock, CALLERS, args=(5,))
    assert stack.store.get_bytes(COUNTER) == str(CALLERS * 5).encode()


def test_deploys_racing_rollbacks_never_leave_an_archived_version_live(
    cloud: Cloud, stack: Stack, approved: Callable[[], ModelVersion], artifact_dir: Path
) -> None:
    approved(), approved()
    lifecycle.deploy(stack, MODEL)
    first = 3  # the pending versions each round approves: 3, 4 in round 0, 5, 6 in round 1...
    for n in range(first, first + 2 * ROUNDS):
        lifecycle.register(stack, MODEL, store_artifact(stack, artifact_dir, f"run-{n}"), {}, {})

    def live_is_approved(round_: int, outcomes: list[str]) -> None:
        live = stack.endpoint.current(MODEL)
        assert live is not None, f"round {round_}: nothing live after {outcomes}"
        status = stack.registry.get_version(MODEL, live.version).status
        assert status == APPROVED, f"round {round_}: v{live.version} is {status} and live"

    rounds = race(
        cloud.name,
        cloud.parallel,
        stack,
        approve_deploy_or_roll_back,
        CALLERS,
        rounds=ROUNDS,
        args=(first,),
        after_round=live_is_approved,
    )
    outcomes = [outcome for round_ in rounds for outcome in round_]
    # the race did happen: both kinds of change went through, more than once
    assert sum(o.startswith("deployed") for o in outcomes) > ROUNDS
    assert sum(o.startswith("rolled back") for o in outcomes) > 1
