"""Races every stack must survive: parallel callers, each with its own connection.

Local stacks race processes, emulated clouds threads (tests/contract/races.py). Bounded in
callers and rounds; no timing is asserted, only the state each round leaves.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml import lifecycle
from ml.clouds import connect
from ml.clouds.base import APPROVED, Deployment, ModelVersion, Stack
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
    uri = store_artifact(stack, artifact_dir, "run-pending")  # one artifact serves them all
    for _ in range(first, first + 2 * ROUNDS):
        stack.registry.create_version(MODEL, uri, {}, {})

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


class HeldDeploy:
    """An EndpointTarget that holds its first `deploy` until released: a deploy caught between
    choosing its version and pointing the endpoint at it. Everything else is the stack's own."""

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint
        self.entered, self.release = threading.Event(), threading.Event()

    def deploy(self, version: ModelVersion, **kwargs: Any) -> Deployment:
        self.entered.set()
        assert self.release.wait(60), "never released"
        return self.endpoint.deploy(version, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.endpoint, name)


def test_a_rollback_waits_for_a_deploy_caught_halfway(
    stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    """The interleaving that once left an archived version live, made to happen: a deploy has
    chosen v2 and not yet pointed the endpoint at it when a rollback of v2 starts.

    Serialised (the model's lock), the rollback runs after the deploy and v1 ends up live.
    Without the lock the rollback finishes first and the deploy then serves the archived v2.
    The rollback is given a bounded head start, then the deploy is released: correct code
    passes whatever the machine's load; broken code fails unless the machine is so slow that
    the rollback could not finish in that time.
    """
    approved(), approved()
    lifecycle.deploy(stack, MODEL)
    held = HeldDeploy(connect(stack.cloud, stack.outputs).endpoint)
    deployer = dataclasses.replace(connect(stack.cloud, stack.outputs), endpoint=held)
    operator = connect(stack.cloud, stack.outputs)
    outcomes: dict[str, Any] = {}

    def run(name: str, step: Callable[[], Deployment]) -> None:
        try:
            outcomes[name] = step().version
        except Exception as exc:  # reported below
            outcomes[name] = exc

    deploy = threading.Thread(
        target=run, args=("deploy", lambda: lifecycle.deploy(deployer, MODEL))
    )
    deploy.start()
    assert held.entered.wait(60), "the deploy never reached the endpoint"
    rollback = threading.Thread(
        target=run, args=("rollback", lambda: lifecycle.rollback(operator, MODEL, "race"))
    )
    rollback.start()
    rollback.join(3)  # the head start: a rollback that is not serialised finishes in it
    held.release.set()
    deploy.join(60)
    rollback.join(60)
    assert outcomes == {"deploy": 2, "rollback": 1}, outcomes
    live = stack.endpoint.current(MODEL)
    assert live is not None and live.version == 1
    assert stack.registry.get_version(MODEL, 2).status == "archived"
