"""A tiny HTTP toolkit for the server tests: a keep-alive JSON client over http.client, raw
socket exchanges for what a well-behaved client never sends, and waiting with a deadline."""

from __future__ import annotations

import errno
import http.client
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
JSON = {"content-type": "application/json"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One keep-alive connection; `request` reuses it (http.client reconnects if it closed)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        if isinstance(body, str):
            body = body.encode()
        self.connection.request(method, path, body=body, headers=dict(headers or {}))
        response = self.connection.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def post(self, path: str, payload: Any, headers: Mapping[str, str] | None = None) -> Answer:
        return self.request("POST", path, json.dumps(payload), {**JSON, **(headers or {})})

    @property
    def socket(self) -> socket.socket | None:
        return self.connection.sock

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exchange(port: int, data: bytes, *, timeout: float = 10.0, half_close: bool = True) -> bytes:
    """Send `data` on a new connection, stop sending (unless told not to), and return every
    byte the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the server closed first (a busy machine decides the order)
            if exc.errno not in (errno.EPIPE, errno.ENOTCONN, errno.ECONNRESET):
                raise
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def parse_responses(data: bytes, *, head: bool = False) -> list[Answer]:
    """The responses in a raw byte stream, in order (interim 1xx ones included); `head`: they
    answer HEAD requests (a length, no body)."""
    answers = []
    while data:
        top, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"an incomplete response head: {data[:200]!r}")
        lines = top.decode("latin-1").split("\r\n")
        version, status, _ = [*lines[0].split(" ", 2), ""][:3]
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if head and not rest.startswith(b"{"):  # a refusal before the method was read has one
            length = 0
        assert len(rest) >= length, f"a truncated body: {rest[:200]!r}"
        answers.append(Answer(int(status), headers, rest[:length]))
        data = rest[length:]
    return answers


def wait_until(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.02) -> T:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout} s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
