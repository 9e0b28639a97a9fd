"""Parallel callers released together, round after round, on any stack.

`race` runs `worker(stack, index, round, *args)` in `workers` callers at once, each with its
own connection to the stack (`connect(cloud, outputs)`), as separate CI jobs or users would
be. Local stacks race separate processes (spawned: nothing shared but the files); emulated
clouds race threads against the one in-process emulator. Every round starts when all callers
are ready and ends when all are done; between rounds, `after_round(round, results)` checks
the state with nobody writing. A worker that raises fails the race with its traceback.
Bounded: a fixed number of callers and rounds, and a timeout on every wait.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

from ml.clouds import connect
from ml.clouds.base import Stack

WAIT_SECONDS = 120


def _caller(cloud, outputs, worker, index, rounds, args, start, end, results) -> None:
    stack = connect(cloud, outputs)
    for round_ in range(rounds):
        start.wait(WAIT_SECONDS)
        try:
            results.put((round_, index, "ok", worker(stack, index, round_, *args)))
        except BaseException:  # reported to the parent, which fails the test
            results.put((round_, index, "error", traceback.format_exc()))
        end.wait(WAIT_SECONDS)


def race(
    cloud: str,
    parallel: str,
    stack: Stack,
    worker: Callable[..., Any],
    workers: int,
    *,
    rounds: int = 1,
    args: tuple = (),
    after_round: Callable[[int, list[Any]], None] | None = None,
) -> list[list[Any]]:
    """Each round's results, in caller order."""
    if parallel == "processes":
        kit: Any = multiprocessing.get_context("spawn")
        start, end, results = kit.Barrier(workers + 1), kit.Barrier(workers + 1), kit.Queue()
        make = kit.Process
    else:
        start, end = threading.Barrier(workers + 1), threading.Barrier(workers + 1)
        results, make = queue.Queue(), threading.Thread
    callers = [
        make(
            target=_caller,
            args=(cloud, stack.outputs, worker, i, rounds, args, start, end, results),
            daemon=True,
        )
        for i in range(workers)
    ]
    for caller in callers:
        caller.start()
    every: list[list[Any]] = []
    try:
        for round_ in range(rounds):
            start.wait(WAIT_SECONDS)
            end.wait(WAIT_SECONDS)
            got = sorted(results.get(timeout=WAIT_SECONDS) for _ in range(workers))
            errors = [value for _, _, status, value in got if status == "error"]
            assert not errors, f"round {round_}: a caller failed:\n" + "\n".join(errors)
            every.append([value for *_, value in got])
            if after_round:
                after_round(round_, every[-1])
    except BaseException:
        start.abort()  # release the callers still waiting
        end.abort()
        raise
    finally:
        for caller in callers:
            caller.join(WAIT_SECONDS)
    return every
