"""deploy/endpoint.py, the state every serverless entry point shares, where requests overlap (the
Azure Functions worker runs a function on several threads at once): each request's row count
stays its own, and a due retry of a failed load is made by one request while the others answer."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from contract import metrics, serving
from deploy.endpoint import RETRY_SECONDS, Endpoint, Tap, record
from deploy.service import Service
from tests.conftest import CREDIT_ROW

JSON = {"content-type": "application/json"}


class Lines(Endpoint):
    """An endpoint whose lines are kept in a list."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.lines: list[dict[str, Any]] = []
        super().__init__(*args, **kw)

    def write_line(self, fields: dict[str, Any]) -> None:
        self.lines.append(fields)

    def write_request(self, model, version, properties, values) -> None:
        self.lines.append(record(model, version, properties, values))


def test_each_thread_sees_the_row_count_of_its_own_request() -> None:
    tap = Tap(None, clock=lambda: 0.0)
    first_offered, second_offered = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        tap.offer("credit", 3, "a", {}, {"predictions": [0, 1]})
        first_offered.set()
        second_offered.wait(10)
        seen["first"] = tap.rows  # after the other thread's offer

    def second() -> None:
        first_offered.wait(10)
        tap.offer("credit", 3, "b", {}, {"predictions": [1, 1, 0, 0, 1]})
        second_offered.set()
        seen["second"] = tap.rows

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"first": 2, "second": 5}
    assert tap.rows == 0  # a thread that answered nothing


def test_a_due_retry_is_made_once_while_other_requests_answer_503(
    trained_artifact: Path,
) -> None:
    now = [1000.0]
    loads: list[float] = []
    loading, release = threading.Event(), threading.Event()

    def load(environ) -> Service:
        loads.append(now[0])
        if len(loads) == 1:
            raise OSError("the store is unreachable")
        loading.set()
        release.wait(10)  # a slow download
        return Service.from_env({serving.ENV_MODEL_URI: str(trained_artifact)})

    endpoint = Lines({}, freezes=False, clock=lambda: now[0], load=load)
    body = json.dumps({"instances": [CREDIT_ROW]}).encode()

    def request(rid: str) -> Any:
        headers = {**JSON, serving.REQUEST_ID_HEADER: rid}
        return endpoint.serve(lambda: ("POST", serving.PREDICT_PATH, dict(headers), body), rid)

    now[0] += RETRY_SECONDS
    answers: dict[str, Any] = {}
    retrying = threading.Thread(target=lambda: answers.setdefault("retry", request("r-1")))
    retrying.start()
    assert loading.wait(10)
    meanwhile = request("r-2")  # arrives while the retry is still loading
    release.set()
    retrying.join(10)

    assert len(loads) == 2, loads
    assert meanwhile.status == 503 and b"the store is unreachable" in meanwhile.body
    assert answers["retry"].status == 200, answers["retry"]
    assert request("r-3").status == 200 and len(loads) == 2
    statuses = {line["request_id"]: line["status"] for line in endpoint.lines if "status" in line}
    assert statuses == {"r-1": 200, "r-2": 503, "r-3": 200}
    predicted = {line["request_id"]: line[metrics.PREDICTIONS] for line in endpoint.lines
                 if "status" in line}  # fmt: skip
    assert predicted == {"r-1": 1, "r-2": 0, "r-3": 1}
