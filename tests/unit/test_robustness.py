"""Generated bad requests against every entry point this part owns: `Service.handle` and the
Lambda handler. Every answer is a 2xx or a 4xx with a JSON message, never an exception or a
5xx, and a good request right after still succeeds.

16,400 generated requests in all (10,800 of them one generated JSON value placed six ways,
each request sent to both entry points), derandomized, so a run is repeatable.
Limits are lowered through the environment (TANDEM_MAX_BODY_BYTES / TANDEM_MAX_ROWS), as an
operator would, so oversized bodies stay cheap to generate.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import serving
from deploy.aws_lambda.handler import App
from deploy.service import Service
from tests.conftest import CREDIT_ROW

ROW = CREDIT_ROW
FIELDS = sorted(ROW)
GOOD = json.dumps({"instances": [ROW]}).encode()
JSON_TYPE = {"content-type": "application/json"}
MAX_BODY = 64 * 1024
MAX_ROWS = 20

SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def environ(trained_artifact: Path) -> dict[str, str]:
    return {
        serving.ENV_MODEL_URI: str(trained_artifact),
        serving.ENV_MODEL_VERSION: "2",
        serving.ENV_MAX_BODY_BYTES: str(MAX_BODY),
        serving.ENV_MAX_ROWS: str(MAX_ROWS),
    }


class Checker:
    """Sends one request to both entry points, checks each answer, then a good request."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.service = Service.from_env(environ)
        self.lines: list[str] = []
        self.app = App(environ, write=self.lines.append)
        self.requests = 0

    def both(self, method: Any, path: Any, headers: Any, body: bytes) -> None:
        response = self.service.handle(method, path, headers, body)
        _check(response.status, response.headers, response.body)
        event = _event(method, path, headers, body)
        self.lambda_event(event)
        self.requests += 1
        self.good()

    def lambda_event(self, event: Any) -> None:
        self.lines.clear()
        answer = self.app(event, None)
        assert set(answer) == {"statusCode", "headers", "body", "isBase64Encoded"}, answer
        _check(answer["statusCode"], answer["headers"], answer["body"].encode())
        assert len(self.lines) == 1 and json.loads(self.lines[0])["status"] == answer["statusCode"]
        self.requests += 1

    def good(self) -> None:
        response = self.service.handle("POST", serving.PREDICT_PATH, JSON_TYPE, GOOD)
        assert response.status == 200, response
        answer = self.app(_event("POST", serving.PREDICT_PATH, JSON_TYPE, GOOD), None)
        assert answer["statusCode"] == 200, answer


def _check(status: int, headers: dict[str, str], body: bytes) -> None:
    assert 200 <= status < 300 or 400 <= status < 500, (status, body[:300])
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert isinstance(answer, dict)
    if status >= 400:
        assert isinstance(answer["error"], str) and answer["error"], answer
        assert len(answer["error"]) < 1000, "an error message must not echo a huge value"


def _event(method: Any, path: Any, headers: Any, body: bytes) -> dict[str, Any]:
    """The request as a Function URL delivers it: a body that is not UTF-8 comes base64."""
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    return {
        "version": "2.0",
        "rawPath": path,
        "headers": headers,
        "requestContext": {"http": {"method": method, "path": path}, "stage": "$default"},
        "body": text,
        "isBase64Encoded": encoded,
    }


@pytest.fixture(scope="module")
def checker(environ: dict[str, str]) -> Checker:
    return Checker(environ)


def run(
    checker: Checker,
    examples: int,
    strategy: st.SearchStrategy,
    send: Callable,
    per_example: int = 2,
) -> None:
    """Run `send(checker, example)` on `examples` generated examples, each making
    `per_example` bad requests; check that they all ran."""
    before = checker.requests

    @settings(max_examples=examples, **SETTINGS)
    @given(strategy)
    def check(example: Any) -> None:
        send(checker, example)

    check()
    assert checker.requests - before >= examples * per_example, checker.requests - before


# --- strategies ---------------------------------------------------------------------------------

# Every string hypothesis can make (lone surrogates included), and numbers JSON may carry:
# integers past float range, non-finite floats (json.dumps writes NaN and Infinity).
texts = st.text(st.characters(codec=None), max_size=12)
nasty_numbers = st.one_of(
    st.integers(),
    # past float64 (and float32) range; drawn as exponents, which is far cheaper
    st.integers(100, 4000).map(lambda bits: 2**bits + 1),
    st.integers(100, 4000).map(lambda bits: -(2**bits)),
    st.floats(),
    st.sampled_from([3.5e38, -3.5e38, 3.4028235e38, 1e308, 5e-324, -0.0]),
)
scalars = st.one_of(st.none(), st.booleans(), nasty_numbers, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=6,
)


def dumps(value: Any) -> bytes:
    # ensure_ascii keeps lone surrogates as \\ud800 escapes: valid JSON text a client can send
    return json.dumps(value).encode()


@st.composite
def bad_rows(draw: st.DrawFn) -> bytes:
    """A records body whose rows are the good row with fields replaced, dropped or added."""
    rows = []
    for _ in range(draw(st.integers(1, 2))):
        row = dict(ROW)
        for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
            action = draw(st.sampled_from(["replace", "replace", "drop"]))
            if action == "drop":
                del row[field]
            else:
                row[field] = draw(json_values)
        row.update(draw(st.dictionaries(texts, scalars, max_size=2)))
        rows.append(row)
    return dumps({"instances": rows})


@st.composite
def bad_columns(draw: st.DrawFn) -> bytes:
    """A columns body: lists of any values, of uneven lengths, or not lists at all."""
    n = draw(st.integers(0, 3))
    columns: dict[str, Any] = {}
    for field in FIELDS:
        if draw(st.booleans()):
            columns[field] = draw(st.lists(scalars, min_size=n, max_size=n))
        elif draw(st.integers(0, 3)) == 0:
            continue
        else:
            columns[field] = draw(json_values)
    return dumps({"inputs": columns, **draw(st.dictionaries(texts, scalars, max_size=1))})


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return ('{"a":' * depth + "1" + "}" * depth).encode()
    return (opener * depth + closer * depth).encode()


broken_bytes = st.one_of(
    st.binary(max_size=200),
    st.integers(0, len(GOOD) - 1).map(lambda cut: GOOD[:cut]),  # truncated
    st.tuples(st.integers(0, len(GOOD)), st.binary(min_size=1, max_size=4)).map(
        lambda t: GOOD[: t[0]] + t[1] + GOOD[t[0] :]
    ),  # spliced bytes, often invalid UTF-8
    st.sampled_from([b"\xff\xfe", b"\xc3\x28", b'{"instances": [\xed\xa0\x80]}', b"", b"null"]),
    # nested past Python's recursion limit, and within the body limit
    st.tuples(st.integers(1, 10_000), st.sampled_from("[{")).map(lambda t: _nested(*t)),
    st.tuples(st.integers(1, 10_000), st.sampled_from("[{")).map(lambda t: _nested(*t)[:-1]),
    st.integers(MAX_BODY + 1, 3 * MAX_BODY).map(lambda n: b" " * n),  # oversized
    st.integers(MAX_ROWS + 1, 60).map(lambda n: dumps({"instances": [ROW] * n})),  # too many
    st.sampled_from([b'{"instances": [' + b"1" * 5000 + b"]}", b'{"a": 1e999}', b"NaN"]),
)

methods = st.one_of(
    st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "post", ""]),
    texts,
)
paths = st.one_of(
    st.sampled_from([serving.PREDICT_PATH, serving.HEALTH_PATH, "/", "", "/predict/", "//predict"]),
    texts,
    st.text(max_size=3000),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin-1",
            "application/json; charset=utf-16",
            "multipart/form-data; boundary=x",
            "",
        ]
    ),
    texts,
)
headers = st.dictionaries(
    st.one_of(st.sampled_from(["content-type", "x-request-id", "x-tandem-route"]), texts),
    texts,
    max_size=4,
)


# --- the tests ----------------------------------------------------------------------------------


def placements(value: Any, field: str) -> list[bytes]:
    """One generated value in every place a request can carry it: the whole body, a row, a
    field of a row, a column, a column's value."""
    return [
        dumps(value),
        dumps({"instances": value}),
        dumps({"instances": [value]}),
        dumps({"instances": [{**ROW, field: value}]}),
        dumps({"inputs": {**{k: [v] for k, v in ROW.items()}, field: [value]}}),
        dumps({"inputs": {**{k: [v] for k, v in ROW.items()}, field: value}}),
    ]


def test_any_json_value_in_every_place(checker: Checker) -> None:
    """Arbitrary JSON (wrong types, huge and non-finite numbers, lone surrogates, nesting) as
    the body, a row, each field and each column: 6 bodies x 2 entry points per example."""

    def send(c: Checker, example: tuple[Any, str]) -> None:
        for body in placements(*example):
            c.both("POST", serving.PREDICT_PATH, JSON_TYPE, body)

    run(checker, 900, st.tuples(json_values, st.sampled_from(FIELDS)), send, per_example=12)


def test_rows_with_several_fields_wrong_dropped_or_added(checker: Checker) -> None:
    run(checker, 600, bad_rows(),
        lambda c, body: c.both("POST", serving.PREDICT_PATH, JSON_TYPE, body))  # fmt: skip


def test_columns_of_anything(checker: Checker) -> None:
    run(checker, 400, bad_columns(),
        lambda c, body: c.both("POST", serving.PREDICT_PATH, JSON_TYPE, body))  # fmt: skip


def test_truncated_oversized_nested_and_invalid_utf8_bodies(checker: Checker) -> None:
    run(checker, 800, broken_bytes,
        lambda c, body: c.both("POST", serving.PREDICT_PATH, JSON_TYPE, body))  # fmt: skip


def test_wrong_methods_paths_content_types_and_headers(checker: Checker) -> None:
    request = st.tuples(methods, paths, content_types, headers, st.sampled_from([GOOD, b"{}"]))

    def send(c: Checker, r: tuple) -> None:
        method, path, media, extra, body = r
        c.both(method, path, {**extra, "content-type": media}, body)

    run(checker, 600, request, send)


@st.composite
def corrupted_events(draw: st.DrawFn) -> Any:
    """A good event with one to three of its parts replaced, dropped or mistyped (so most
    get past the first check), or any JSON value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    event = _event("POST", serving.PREDICT_PATH, JSON_TYPE, GOOD)
    http = event["requestContext"]["http"]
    parts = {
        "rawPath": (event, st.one_of(paths, json_values)),
        "headers": (event, st.one_of(headers, json_values)),
        "body": (event, st.one_of(texts, st.binary(max_size=40).map(
            lambda b: base64.b64encode(b).decode()), json_values)),
        "isBase64Encoded": (event, st.one_of(st.booleans(), json_values)),
        "requestContext": (event, json_values),
        "http": (event["requestContext"], json_values),
        "stage": (event["requestContext"], st.one_of(texts, json_values)),
        "method": (http, st.one_of(methods, json_values)),
        "path": (http, st.one_of(paths, json_values)),
    }  # fmt: skip
    for key in draw(st.lists(st.sampled_from(sorted(parts)), min_size=1, max_size=3)):
        where, values = parts[key]
        if draw(st.booleans()):
            where[key] = draw(values)
        else:
            where.pop(key, None)
    return event


def test_malformed_lambda_events(checker: Checker) -> None:
    def send(c: Checker, event: Any) -> None:
        c.lambda_event(event)
        c.good()

    run(checker, 800, corrupted_events(), send, per_example=1)
