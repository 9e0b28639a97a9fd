"""Generated bad requests against the real server (10,000 over the four tests): raw bytes,
broken request lines and headers, wrong methods and content types, truncated and oversized
bodies, arbitrary JSON, non-finite and huge numbers, lone surrogates, invalid UTF-8. Every
answer is a 2xx or a 4xx JSON error with a message, never a 5xx, and a good request right
after still succeeds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import serving
from deploy.server import Server
from deploy.service import Service
from tests.integration.http_helpers import JSON, Answer, Client, exchange, parse_responses
from tests.integration.test_server import GOOD, ROW


def examples(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


MAX_BODY = 4096


@pytest.fixture(scope="module")
def server(trained_artifact: Path) -> Iterator[Server]:
    from deploy.inference import Model

    service = Service(Model.load(trained_artifact, version=1), max_body_bytes=MAX_BODY)
    with Server(service, header_timeout=2.0, body_timeout=2.0).start() as running:
        yield running


@pytest.fixture(scope="module")
def good(server: Server) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


def check(answers: list[Answer], good: Client) -> None:
    for answer in answers:
        assert 200 <= answer.status < 500, (answer.status, answer.body[:300])
        if not answer.body and answer.headers.get("content-length", "0") != "0":
            continue  # the answer to a HEAD request
        body = answer.json()
        if answer.status >= 400:
            assert isinstance(body["error"], str) and body["error"], body
    after = good.request("POST", serving.PREDICT_PATH, GOOD, JSON)
    assert after.status == 200, after.body


def send(server: Server, raw: bytes) -> list[Answer]:
    answers = parse_responses(exchange(server.port, raw), head=raw.startswith(b"HEAD "))
    return [a for a in answers if a.status >= 200]


TOKENS = st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "BREW"])
PATHS = st.sampled_from(
    ["/predict", "/health", "/", "*", "/predict?x=1", "http://h/predict", "/%00", "//predict"]
)
MEDIA = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x+json",
        "multipart/form-data; boundary=x",
        "",
        "application/json; charset=utf-8",
    ]
)
TEXT = st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40)


@examples(3500)
@given(data=st.binary(max_size=600), prefix=st.sampled_from([b"", b"POST /predict HTTP/1.1\r\n"]))
def test_arbitrary_bytes(server: Server, good: Client, data: bytes, prefix: bytes) -> None:
    check(send(server, prefix + data), good)


@examples(2500)
@given(
    method=st.one_of(TOKENS, TEXT),
    path=st.one_of(PATHS, TEXT),
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "http/1.1", "", "HTTP/1.1 x"]),
    headers=st.lists(st.tuples(TEXT, TEXT), max_size=6),
    body=st.binary(max_size=200),
)
def test_broken_heads(server, good, method, path, version, headers, body) -> None:
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in headers]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    check(send(server, raw), good)


@examples(2500)
@given(
    method=TOKENS,
    path=PATHS,
    media=MEDIA,
    body=st.one_of(
        st.binary(max_size=300),
        st.just(b"\xff\xfe" + GOOD),
        st.just(GOOD[:-5]),
        st.just(b"[" * 5000),
    ),
    length_delta=st.sampled_from([0, 0, 0, -3, 5, MAX_BODY * 2]),
    expect=st.booleans(),
)
def test_bodies_and_framing(server, good, method, path, media, body, length_delta, expect):
    head = [f"{method} {path} HTTP/1.1", f"content-length: {max(0, len(body) + length_delta)}"]
    if media is not None:
        head.append(f"content-type: {media}")
    if expect:
        head.append("expect: 100-continue")
    check(send(server, ("\r\n".join(head) + "\r\n\r\n").encode() + body), good)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([10**400, -(10**309), 3.5e38, 1e-320])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.sampled_from([10**400, -(10**309), 3.5e38, -3.5e38, 1e-320, 2**63, "", "salaried"])
    | st.floats()
    | st.text(max_size=10)
)
ROWS = st.fixed_dictionaries({}, optional={name: SCALARS for name in ROW} | {"extra": SCALARS}).map(
    lambda row: {**ROW, **row}
)
PAYLOADS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"instances": st.one_of(st.lists(ROWS, max_size=3), JSON_VALUES)}),
    st.fixed_dictionaries({"inputs": st.dictionaries(st.sampled_from(list(ROW)), JSON_VALUES)}),
    st.fixed_dictionaries(
        {"inputs": st.dictionaries(st.sampled_from(list(ROW)), st.lists(SCALARS, max_size=3))}
    ),
)


@examples(1500)
@given(payload=PAYLOADS, surrogate=st.booleans())
def test_arbitrary_json(server: Server, good: Client, payload, surrogate: bool) -> None:
    text = json.dumps(payload)  # NaN, Infinity and huge integers are written as Python does
    if surrogate:
        text = text.replace("a", "\\ud800", 1)
    answer = good.request("POST", serving.PREDICT_PATH, text.encode(), JSON)
    check([answer], good)
