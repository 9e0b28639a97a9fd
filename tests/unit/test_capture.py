"""Capture for monitoring: sampled requests and predictions as JSON Lines under
captures/<model>/v<n>/<date>/<hour>/, personal columns keyed-hashed or dropped, written off the
request path through a bounded buffer, never failing a request.

The sinks are real: a directory, and S3 in moto. The test sinks below (recording, blocking,
failing) stand in for a store only where a store cannot be made slow or broken on demand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contract import layout, privacy, serving
from deploy.capture import Capture, DirectorySink, S3Sink, sink_for
from ml.clouds.local import DirectoryStore
from tests.integration.aws_fixtures import fake_credentials

KEY = b"k" * 32
PERSONAL = ("customer_id",)
AT = datetime(2026, 1, 31, 13, 5, 12, 345000, tzinfo=UTC)
KEY_PATTERN = re.compile(
    r"captures/(?P<model>[a-z0-9-]+)/(?P<version>v\d+|unversioned)/"
    r"(?P<date>\d{4}-\d\d-\d\d)/(?P<hour>\d\d)/(?P<stamp>\d{8}T\d{12}Z)-(?P<batch>[0-9a-f]+)\.jsonl"
)


class RecordingSink:
    """Keeps every batch in memory, in order; `wrote` is set by each put."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.wrote = threading.Event()

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data
        self.wrote.set()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for data in self.objects.values() for line in data.splitlines()]


class Clock:
    def __init__(self, at: datetime = AT) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


def request(rid: str, rows: int = 1, version: int | None = 3) -> tuple[dict, dict]:
    """A records request with a personal column, and the Service's 200 answer to it."""
    payload = {
        "instances": [
            {"age": 30 + i, "employment": "salaried", "customer_id": f"C-{rid}-{i}"}
            for i in range(rows)
        ]
    }
    answer = {
        "model": "credit",
        "version": version,
        "request_id": rid,
        "task": "binary",
        "classes": [0, 1],
        "predictions": [i % 2 for i in range(rows)],
        "probabilities": [[0.75, 0.25] if i % 2 == 0 else [0.125, 0.875] for i in range(rows)],
    }
    return payload, answer


def capture(sink: Any, **kw: Any) -> Capture:
    options = {"sample": 1.0, "personal_columns": PERSONAL, "key": KEY, "flush_seconds": 3600.0}
    return Capture(sink, **{**options, **kw})


def offer(cap: Capture, rid: str, rows: int = 1, version: int | None = 3) -> None:
    cap.offer("credit", version, rid, *request(rid, rows, version))


# format and partitions


def test_each_row_is_one_json_line_filed_under_model_version_and_hour() -> None:
    sink = RecordingSink()
    cap = capture(sink, clock=Clock())
    offer(cap, "r-1", rows=2)
    columns = {"inputs": {"age": [41, 52], "employment": ["retired", None], "customer_id": [7, 8]}}
    cap.offer("credit", 3, "r-2", columns, {**request("r-2", 2)[1], "predictions": [1, 1]})
    cap.close()

    [(key, data)] = sink.objects.items()
    match = KEY_PATTERN.fullmatch(key)
    assert match, key
    assert key.startswith(layout.capture_partition("credit", 3, AT))
    assert match["date"] == "2026-01-31" and match["hour"] == "13"
    assert match["stamp"] == "20260131T130512345000Z"
    assert data.endswith(b"\n")

    def expected(rid: str, row: int, inputs: dict, prediction: int, probabilities: list) -> dict:
        return {
            "request_id": rid,
            "row": row,
            "time": "2026-01-31T13:05:12.345+00:00",
            "model": "credit",
            "version": 3,
            "inputs": inputs,
            "prediction": prediction,
            "probabilities": probabilities,
        }

    hashed = {value: privacy.pseudonym(value, KEY) for value in ("C-r-1-0", "C-r-1-1", 7, 8)}
    low, high = [0.75, 0.25], [0.125, 0.875]
    assert [json.loads(line) for line in data.splitlines()] == [
        expected(
            "r-1",
            0,
            {"age": 30, "employment": "salaried", "customer_id": hashed["C-r-1-0"]},
            0,
            low,
        ),
        expected(
            "r-1",
            1,
            {"age": 31, "employment": "salaried", "customer_id": hashed["C-r-1-1"]},
            1,
            high,
        ),
        expected("r-2", 0, {"age": 41, "employment": "retired", "customer_id": hashed[7]}, 1, low),
        expected("r-2", 1, {"age": 52, "employment": None, "customer_id": hashed[8]}, 1, high),
    ]
    assert cap.counters() == {"captured": 2, "rows": 4, "dropped": 0, "failed": 0}


def test_rows_are_filed_by_the_version_that_answered_and_the_hour_they_came_in() -> None:
    sink, clock = RecordingSink(), Clock()
    cap = capture(sink, clock=clock)
    before = datetime(2026, 1, 31, 12, 59, 59, 900000, tzinfo=UTC)
    after = datetime(2026, 1, 31, 13, 0, 0, 100000, tzinfo=UTC)
    for rid, at, version in [
        ("a", before, 3),
        ("b", after, 3),
        ("c", after, 4),  # the canary
        ("d", after, None),  # a model served without a version number
        ("e", before, 3),
    ]:
        clock.set(at)
        offer(cap, rid, version=version)
    cap.close()

    filed = {}
    for key, data in sink.objects.items():
        assert KEY_PATTERN.fullmatch(key), key
        partition = key.rsplit("/", 1)[0] + "/"
        filed[partition] = [json.loads(line)["request_id"] for line in data.splitlines()]
    assert filed == {
        layout.capture_partition("credit", 3, before): ["a", "e"],
        layout.capture_partition("credit", 3, after): ["b"],
        layout.capture_partition("credit", 4, after): ["c"],
        layout.capture_partition("credit", None, after): ["d"],
    }
    assert layout.capture_partition("credit", 3, before) == "captures/credit/v3/2026-01-31/12/"
    assert layout.capture_partition("credit", None) == "captures/credit/unversioned/"
    assert layout.capture_partition("credit", 3).startswith(layout.captures_prefix("credit"))


def test_a_capture_key_needs_a_timezone_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        layout.capture_key("credit", 3, datetime(2026, 1, 31, 13), "abc")
    # another zone is filed under its UTC hour
    from datetime import timedelta, timezone

    local = datetime(2026, 1, 31, 15, 0, tzinfo=timezone(timedelta(hours=2)))
    assert layout.capture_key("credit", 3, local, "abc") == (
        "captures/credit/v3/2026-01-31/13/20260131T130000000000Z-abc.jsonl"
    )


def test_the_service_hands_each_answered_request_to_the_capture(trained_artifact: Path) -> None:
    from deploy.inference import Model
    from deploy.service import Service

    live = Model.load(trained_artifact, name="credit", version=3)
    personal = live.card["spec"]["personal_data"]
    sink = RecordingSink()
    cap = capture(sink, personal_columns=personal)
    service = Service(live, capture=cap)
    row = {"age": 41, "income": 38000.5, "debt_ratio": 0.31, "late_payments": 1}
    row |= {"credit_lines": 4, "employment": "salaried", "customer_id": "C-1001"}
    columns = {name: [value, value] for name, value in row.items()}
    answers = []
    for rid, payload in [("rows", {"instances": [row]}), ("columns", {"inputs": columns})]:
        headers = {"content-type": "application/json", "x-request-id": rid}
        response = service.handle(
            "POST", serving.PREDICT_PATH, headers, json.dumps(payload).encode()
        )
        assert response.status == 200, response.body
        answers.append(json.loads(response.body))
    bad = {"instances": [{**row, "age": "old"}]}  # a 422 is not captured
    service.handle("POST", serving.PREDICT_PATH, {}, json.dumps(bad).encode())
    cap.close()

    lines = sink.lines()
    assert [(line["request_id"], line["row"]) for line in lines] == [
        ("rows", 0),
        ("columns", 0),
        ("columns", 1),
    ]
    expected_inputs = {**row, "customer_id": privacy.pseudonym("C-1001", KEY)}
    assert all(line["inputs"] == expected_inputs for line in lines)
    assert [line["prediction"] for line in lines] == [
        *answers[0]["predictions"],
        *answers[1]["predictions"],
    ]
    assert lines[0]["probabilities"] == answers[0]["probabilities"][0]
    assert {(line["model"], line["version"]) for line in lines} == {("credit", 3)}


# personal data


def test_personal_columns_are_keyed_hashed_with_the_stacks_key() -> None:
    sink = RecordingSink()
    cap = capture(sink)
    rows = [{"age": 30, "customer_id": "C-1001"}, {"age": 31, "customer_id": None}]
    payload = {"instances": rows}
    cap.offer("credit", 3, "r-1", payload, {"predictions": [0, 1], "probabilities": None})
    cap.close()

    first, second = sink.lines()
    assert first["inputs"] == {"age": 30, "customer_id": privacy.pseudonym("C-1001", KEY)}
    assert second["inputs"] == {"age": 31, "customer_id": None}  # unknown stays unknown
    assert first["probabilities"] is None  # regression answers carry none
    assert b"C-1001" not in b"".join(sink.objects.values())


def test_personal_columns_are_dropped_without_a_key() -> None:
    sink = RecordingSink()
    cap = capture(sink, key=None)
    offer(cap, "r-1", rows=2)
    columns = {"inputs": {"age": [41], "customer_id": ["C-2002"]}}
    cap.offer("credit", 3, "r-2", columns, {"predictions": [1], "probabilities": [[0.5, 0.5]]})
    cap.close()

    assert [line["inputs"] for line in sink.lines()] == [
        {"age": 30, "employment": "salaried"},
        {"age": 31, "employment": "salaried"},
        {"age": 41},
    ]
    written = b"".join(sink.objects.values())
    assert b"customer_id" not in written and b"C-" not in written


def test_a_key_too_short_to_protect_anything_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        capture(RecordingSink(), key=b"short")


# sampling


def _plain_share(request_id: str) -> float:
    """The canary's split of request ids (deploy/service.choose): sha256, unsalted."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2**64


def test_the_sample_holds_its_share_of_requests_decided_by_request_id() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    sink = RecordingSink()
    cap = capture(sink, sample=0.25, max_buffer=100_000, batch_rows=100_000)
    for rid in ids:
        offer(cap, rid, rows=2)
    cap.close()

    rows_by_request: dict[str, list[int]] = {}
    for line in sink.lines():
        rows_by_request.setdefault(line["request_id"], []).append(line["row"])
    assert all(rows == [0, 1] for rows in rows_by_request.values())  # a request stays whole
    share = len(rows_by_request) / len(ids)
    assert 0.235 < share < 0.265, share  # 20,000 draws: the sd is 0.003
    assert set(rows_by_request) == {rid for rid in ids if cap.sampled(rid)}
    # the same ids, the same decisions, in another process or instance
    again = capture(RecordingSink(), sample=0.25)
    assert [again.sampled(rid) for rid in ids] == [cap.sampled(rid) for rid in ids]
    again.close()
    # independent of a plain-hash split: a 25% canary is sampled at 25% too, not wholly or never
    canary = [rid for rid in ids if _plain_share(rid) < 0.25]
    canary_share = sum(rid in rows_by_request for rid in canary) / len(canary)
    assert 0.22 < canary_share < 0.28, canary_share


def test_sample_zero_captures_nothing_and_one_captures_everything() -> None:
    none, every = RecordingSink(), RecordingSink()
    off, on = capture(none, sample=0.0), capture(every, sample=1.0)
    for i in range(200):
        offer(off, f"r-{i}")
        offer(on, f"r-{i}")
    off.close()
    on.close()
    assert none.objects == {} and off.counters()["captured"] == 0
    assert len(every.lines()) == 200 and on.counters()["captured"] == 200


# off the request path


class BlockingSink(RecordingSink):
    """A store that hangs until released: `entered` is set when a write is under way."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def put(self, key: str, data: bytes) -> None:
        self.entered.set()
        assert self.release.wait(60), "the test never released the sink"
        super().put(key, data)


def test_a_full_buffer_drops_and_counts_instead_of_blocking() -> None:
    sink = BlockingSink()
    cap = capture(sink, max_buffer=4, batch_rows=1)
    offer(cap, "first")  # the worker takes it and hangs in the sink
    assert sink.entered.wait(10)

    def flood() -> None:
        for i in range(100):
            offer(cap, f"r-{i}", rows=2)

    offering = threading.Thread(target=flood)
    offering.start()
    offering.join(30)
    stuck = offering.is_alive()
    sink.release.set()
    assert not stuck, "offer blocked on a hanging sink"
    cap.close()

    counts = cap.counters()
    assert counts == {"captured": 3, "rows": 5, "dropped": 98, "failed": 0}, counts
    assert [line["request_id"] for line in sink.lines()] == ["first", "r-0", "r-0", "r-1", "r-1"]


class FailingSink:
    def __init__(self) -> None:
        self.calls = 0

    def put(self, key: str, data: bytes) -> None:
        self.calls += 1
        raise ConnectionError(f"store unreachable while writing {key}")


def test_a_failing_sink_never_reaches_the_request_and_is_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FailingSink()
    cap = capture(sink, batch_rows=1)
    with caplog.at_level(logging.WARNING, logger="deploy.capture"):
        for i in range(20):
            offer(cap, f"r-{i}")
            assert cap.flush(10)  # one batch per request: twenty failed writes
        cap.close()
    assert sink.calls == 20
    assert cap.counters() == {"captured": 0, "rows": 0, "dropped": 0, "failed": 20}
    sink_logs = [r.getMessage() for r in caplog.records if "sink failed" in r.getMessage()]
    assert len(sink_logs) == 1 and "ConnectionError: store unreachable" in sink_logs[0]


def test_malformed_input_to_offer_never_raises_and_is_counted() -> None:
    sink = RecordingSink()
    cap = capture(sink)
    cap.offer("credit", 3, "r-1", {"instances": [{"age": 1}]}, None)  # type: ignore[arg-type]
    cap.offer("credit", 3, None, {}, {})  # type: ignore[arg-type]
    # more rows than predictions: never written misaligned
    cap.offer("credit", 3, "r-2", {"instances": [{"age": 1}, {"age": 2}]}, {"predictions": [1]})
    cap.offer("credit", 3, "r-3", {"instances": [{"age": float("nan")}]}, {"predictions": [1]})
    offer(cap, "r-4")
    cap.close()
    assert [line["request_id"] for line in sink.lines()] == ["r-4"]
    assert cap.counters() == {"captured": 1, "rows": 1, "dropped": 0, "failed": 4}


# when batches are written


def test_close_writes_everything_buffered_and_later_offers_are_dropped() -> None:
    sink = RecordingSink()
    cap = capture(sink, batch_rows=10_000)  # neither the size nor the hour-long timer is reached
    for i in range(50):
        offer(cap, f"r-{i}")
    assert sink.objects == {}
    cap.close()
    assert len(sink.objects) == 1
    assert [line["request_id"] for line in sink.lines()] == [f"r-{i}" for i in range(50)]
    offer(cap, "late")
    cap.close()  # idempotent
    assert cap.counters() == {"captured": 50, "rows": 50, "dropped": 1, "failed": 0}


def test_a_batch_is_written_once_batch_rows_wait() -> None:
    sink = RecordingSink()
    cap = capture(sink, batch_rows=3)
    offer(cap, "a")
    offer(cap, "b", rows=2)
    assert sink.wrote.wait(10)
    assert [line["request_id"] for line in sink.lines()] == ["a", "b", "b"]
    cap.close()


def test_a_batch_is_written_every_flush_seconds() -> None:
    sink = RecordingSink()
    cap = capture(sink, flush_seconds=0.05)
    offer(cap, "a")
    assert sink.wrote.wait(10)
    assert [line["request_id"] for line in sink.lines()] == ["a"]
    cap.close()


def test_flush_writes_now() -> None:
    sink = RecordingSink()
    cap = capture(sink)
    offer(cap, "a")
    assert cap.flush(10)
    assert [line["request_id"] for line in sink.lines()] == ["a"]
    offer(cap, "b")
    cap.close()
    assert cap.flush(10)  # after close: nothing left to write
    assert len(sink.objects) == 2


# the sinks


def test_the_directory_sink_writes_where_the_local_store_lists_and_reads(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cap = Capture.from_env(
        {serving.ENV_CAPTURE_URI: str(store), serving.ENV_CAPTURE_SAMPLE: "1"}, PERSONAL, KEY
    )
    assert cap is not None and isinstance(cap.sink, DirectorySink)
    offer(cap, "a", rows=2)
    cap.close()

    keys = DirectoryStore(store).list_keys(layout.capture_partition("credit", 3))
    assert len(keys) == 1 and KEY_PATTERN.fullmatch(keys[0])
    lines = DirectoryStore(store).get_bytes(keys[0]).splitlines()
    assert [json.loads(line)["row"] for line in lines] == [0, 1]
    assert [p.name for p in store.rglob(".*")] == []  # no temporary file left behind


def test_the_directory_sink_never_exposes_part_of_a_batch(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    line = json.dumps({"inputs": {"x": "y" * 1000}}).encode() + b"\n"
    batch = line * 4000  # 4 MB: many write calls in the kernel
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            for path in tmp_path.rglob("*.jsonl"):
                if not path.name.startswith("."):
                    data = path.read_bytes()
                    assert data == batch, f"{path.name}: {len(data)} of {len(batch)} bytes"

    errors: list[BaseException] = []
    watcher = threading.Thread(target=lambda: _record(reader, errors))
    watcher.start()
    try:
        for i in range(10):
            sink.put(f"captures/credit/v3/2026-01-31/13/batch-{i}.jsonl", batch)
    finally:
        done.set()
        watcher.join(60)
    assert errors == []
    assert len(list(tmp_path.rglob("*.jsonl"))) == 10

    # a write that fails half way leaves nothing behind, under any name
    with pytest.raises(TypeError):
        sink.put("captures/credit/v3/2026-01-31/14/broken.jsonl", "not bytes")  # type: ignore[arg-type]
    assert list((tmp_path / "captures/credit/v3/2026-01-31/14").iterdir()) == []


def _record(target: Any, errors: list[BaseException]) -> None:
    try:
        target()
    except BaseException as exc:  # surfaced by the test thread
        errors.append(exc)


def test_the_s3_sink_puts_one_object_per_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from moto import mock_aws

    fake_credentials(monkeypatch, tmp_path)
    with mock_aws():
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="models")
        cap = Capture.from_env(
            {serving.ENV_CAPTURE_URI: "s3://models/tandem/", serving.ENV_CAPTURE_SAMPLE: "1.0"},
            PERSONAL,
            KEY,
            clock=Clock(),
        )
        assert cap is not None and isinstance(cap.sink, S3Sink)
        offer(cap, "a", rows=2)
        offer(cap, "b", version=4)
        cap.close()

        listed = s3.list_objects_v2(Bucket="models", Prefix="tandem/captures/credit/")
        keys = sorted(item["Key"] for item in listed["Contents"])
        assert [k.rsplit("/", 1)[0] + "/" for k in keys] == [
            "tandem/" + layout.capture_partition("credit", 3, AT),
            "tandem/" + layout.capture_partition("credit", 4, AT),
        ]
        stored = s3.get_object(Bucket="models", Key=keys[0])
        assert stored["ContentType"] == "application/x-ndjson"
        lines = [json.loads(line) for line in stored["Body"].read().splitlines()]
        assert [(line["request_id"], line["row"]) for line in lines] == [("a", 0), ("a", 1)]
        assert lines[0]["inputs"]["customer_id"] == privacy.pseudonym("C-a-0", KEY)
        assert cap.counters() == {"captured": 2, "rows": 3, "dropped": 0, "failed": 0}


# configuration


def test_capture_is_off_unless_the_environment_names_where_it_goes() -> None:
    assert Capture.from_env({}, PERSONAL, KEY) is None
    assert Capture.from_env({serving.ENV_CAPTURE_URI: "  "}, PERSONAL, KEY) is None
    off = {serving.ENV_CAPTURE_URI: "s3://models", serving.ENV_CAPTURE_SAMPLE: "0"}
    assert Capture.from_env(off, PERSONAL, KEY) is None


def test_a_uri_without_a_sample_captures_every_request(tmp_path: Path) -> None:
    cap = Capture.from_env({serving.ENV_CAPTURE_URI: tmp_path.as_uri()}, PERSONAL, None)
    assert cap is not None
    assert cap.sample == 1.0 and cap.sink.root == tmp_path  # type: ignore[attr-defined]
    cap.close()


@pytest.mark.parametrize("raw", ["abc", "1.5", "-0.1", "nan", "inf", "x" * 1000])
def test_a_bad_sample_is_refused_by_name(raw: str) -> None:
    env = {serving.ENV_CAPTURE_URI: "s3://models", serving.ENV_CAPTURE_SAMPLE: raw}
    with pytest.raises(ValueError, match=serving.ENV_CAPTURE_SAMPLE) as refused:
        Capture.from_env(env, PERSONAL, KEY)
    assert len(str(refused.value)) < 200  # never echoes a huge value


@pytest.mark.parametrize(
    "uri", ["https://example.com/models", "https://acct.blob.core.windows.net", "s3://", "gs://b"]
)
def test_a_capture_uri_no_sink_serves_is_refused_by_name(uri: str) -> None:
    with pytest.raises(ValueError, match=serving.ENV_CAPTURE_URI):
        sink_for(uri)
