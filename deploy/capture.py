"""Capture for monitoring: a sample of requests and their predictions, written to the store's
capture prefix in batches, off the request path.

The Service calls `offer` after each 200 predict. `offer` decides from the request id whether
the request is sampled, appends it to a bounded buffer (or drops and counts it when the buffer
is full) and returns. A worker thread turns each request into one JSON line per row, with the
spec's personal columns keyed-hashed (`contract.privacy.pseudonym`) or, without a key, dropped,
and writes each model version's rows of one UTC hour as one object under
`contract.layout.capture_key`. Nothing here raises into a request: failures are counted and
logged once per kind.

Monitoring reads exactly this format (documented once, in docs/architecture.md), one line per
row of a request:

    {"request_id": str, "row": int, "time": "2026-01-31T13:05:12.345+00:00", "model": str,
     "version": int | null, "inputs": {column: value}, "prediction": label | number,
     "probabilities": [float, ...] | null}

Standard library only (boto3 is imported by the S3 sink, azure-storage-blob by the blob sink,
when it first writes).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote, urlparse

from contract import layout, privacy, serving

log = logging.getLogger(__name__)

MAX_BUFFER_ROWS = 10_000  # rows waiting to be written; a sampled request beyond it is dropped
BATCH_ROWS = 1_000  # a batch is written once this many rows wait...
FLUSH_SECONDS = 60.0  # ...or this long after the previous write
CLOSE_SECONDS = 30.0  # how long close() waits for the last write
CONTENT_TYPE = "application/x-ndjson"
# Sampling hashes the request id with this salt: canary routing splits on the plain
# sha256(request_id), and an unsalted capture sample would hold only one side of that split.
_SAMPLE_SALT = b"tandem-capture:"
_ERROR_CHARS = 200  # a logged error is cut to this length


class Sink(Protocol):
    """Where batches go. `put` stores `data` whole under `key` (a store key from
    `contract.layout`), or raises; it is only ever called from the capture's worker thread."""

    def put(self, key: str, data: bytes) -> None: ...


class DirectorySink:
    """A store directory (the local stack's `<root>/store`). A batch is written and synced under
    a hidden temporary name, then renamed into place: a reader never sees part of a batch, and
    the store never lists one being written."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def put(self, key: str, data: bytes) -> None:
        import tempfile  # only this sink needs it

        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.root)!r})"


class S3Sink:
    """An S3 bucket (the stack's models bucket), keys under an optional prefix. One PutObject
    per batch, so an object appears whole or not at all; the bucket's default encryption
    applies (SSE-KMS on a Tandem stack)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._client = client

    def put(self, key: str, data: bytes) -> None:
        if self._client is None:
            import boto3  # only this sink needs it; the Lambda runtime ships it

            self._client = boto3.client("s3")
        self._client.put_object(
            Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType=CONTENT_TYPE
        )

    def __repr__(self) -> str:
        return f"S3Sink('s3://{self.bucket}/{self.prefix}')"


class BlobSink:
    """A blob container (the stack's captures container), blob names under an optional prefix.
    One upload per batch, so a blob appears whole or not at all, and never over an existing
    one; signed in as the endpoint's managed identity (Azurite: its development key), see
    deploy/azure_blob.py."""

    def __init__(self, container: Any) -> None:
        self.container = container  # an azure_blob.Container: signs in on its first write
        prefix = container.location.name.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""

    def put(self, key: str, data: bytes) -> None:
        self.container.put_new(self.prefix + key, data, CONTENT_TYPE)

    def __repr__(self) -> str:
        return f"BlobSink('{self.container.location.container_url}/{self.prefix}')"


def sink_for(uri: str, environ: Mapping[str, str] = os.environ) -> Sink:
    """The sink for a `TANDEM_CAPTURE_URI`: `s3://bucket[/prefix]`, a blob container URL
    (`https://<account>.blob.core.windows.net/<container>[/prefix]`, or Azurite's), or a store
    directory as a path or `file://` URI. `environ` holds what a blob sink signs in with."""
    from deploy import azure_blob  # standard library until a blob is written

    try:
        location = azure_blob.parse(uri)
    except ValueError as exc:
        raise ValueError(f"{serving.ENV_CAPTURE_URI}: {exc}") from None
    if location is not None:
        if not location.container:
            raise ValueError(f"{serving.ENV_CAPTURE_URI}: {uri[:60]!r} names no container")
        return BlobSink(azure_blob.Container(location, environ))
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{serving.ENV_CAPTURE_URI}: {uri[:60]!r} names no bucket")
        return S3Sink(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        return DirectorySink(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive
        raise ValueError(
            f"{serving.ENV_CAPTURE_URI}: unsupported scheme {parsed.scheme[:60]!r}; expected a "
            "directory, s3://bucket[/prefix] or https://<account>.blob.core.windows.net/"
            "<container>[/prefix]"
        )
    return DirectorySink(uri)


class _Offered(NamedTuple):
    at: float  # epoch seconds when offered
    model: str
    version: int | None
    request_id: str
    payload: Mapping[str, Any]
    answer: Mapping[str, Any]
    rows: int


class Capture:
    """A sampled, buffered, batched writer of requests and predictions (see the module doc).

    `sample` is the share of requests captured (0..1), decided per request id so a request's
    rows stay together. `personal_columns` are keyed-hashed with `key`, or dropped when `key`
    is None. `max_buffer` and `batch_rows` count rows; `clock` gives epoch seconds.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        sample: float,
        personal_columns: Iterable[str],
        key: bytes | None,
        max_buffer: int = MAX_BUFFER_ROWS,
        batch_rows: int = BATCH_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (isinstance(sample, int | float) and 0.0 <= sample <= 1.0):
            raise ValueError(f"capture sample must be a number from 0 to 1, got {sample!r:.60}")
        if key is not None:
            privacy.pseudonym("", key)  # refuses a short key now, not on the worker thread
        if max_buffer < 1 or batch_rows < 1 or not flush_seconds > 0:
            raise ValueError("max_buffer and batch_rows must be >= 1, flush_seconds > 0")
        self.sink = sink
        self.sample = float(sample)
        self._threshold = math.floor(self.sample * 2**64)  # sampled: salted hash below this
        self._personal = frozenset(personal_columns)
        self._key = key
        self._max_buffer = max_buffer
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: list[_Offered] = []
        self._pending_rows = 0
        self._flushes_asked = 0  # flush() calls; the worker answers each once it has written
        self._flushes_done = 0
        self._closed = False
        self._counts = {"captured": 0, "rows": 0, "dropped": 0, "failed": 0}
        self._logged: set[str] = set()
        self._worker = threading.Thread(target=self._run, name="tandem-capture", daemon=True)
        self._worker.start()
        atexit.register(self.close)  # a process that exits without close() still flushes

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] = os.environ,
        personal_columns: Iterable[str] = (),
        key: bytes | None = None,
        **kw: Any,
    ) -> Capture | None:
        """The capture an endpoint's environment asks for, or None when capture is off
        (`TANDEM_CAPTURE_URI` unset or empty, or `TANDEM_CAPTURE_SAMPLE` 0). The sample
        defaults to 1 (every request) when only the URI is set."""
        uri = environ.get(serving.ENV_CAPTURE_URI, "").strip()
        raw = environ.get(serving.ENV_CAPTURE_SAMPLE, "").strip() or "1"
        try:
            sample = float(raw)
        except ValueError:
            sample = math.nan
        if not 0.0 <= sample <= 1.0:
            raise ValueError(
                f"{serving.ENV_CAPTURE_SAMPLE}: expected a number from 0 to 1, got {raw[:60]!r}"
            )
        if not uri or sample == 0.0:
            return None
        sink = sink_for(uri, environ)
        return cls(sink, sample=sample, personal_columns=personal_columns, key=key, **kw)

    # the request path
    def offer(
        self,
        model: str,
        version: int | None,
        request_id: str,
        payload: Mapping[str, Any],
        answer: Mapping[str, Any],
    ) -> None:
        """Take one answered request if it is sampled; O(1), never blocks on a write, never
        raises. Normalising and writing happen on the worker thread."""
        try:
            if not self.sampled(request_id):
                return
            rows = max(1, len(answer.get("predictions") or ()))
            item = _Offered(self._clock(), model, version, request_id, payload, answer, rows)
            with self._cond:
                closed = self._closed
                if not closed and self._pending_rows + rows <= self._max_buffer:
                    self._pending.append(item)
                    self._pending_rows += rows
                    if self._pending_rows >= self._batch_rows:
                        self._cond.notify()
                    return
                self._counts["dropped"] += 1
            if closed:
                self._warn_once("closed", "a request was offered after close(); dropped")
            else:
                self._warn_once(
                    "full",
                    f"the buffer is full ({self._max_buffer} rows, the sink is slower than "
                    "traffic); sampled requests are dropped and counted in 'dropped'",
                )
        except Exception as exc:  # a capture failure never fails a request
            self._fail("offer", exc, 1)

    def sampled(self, request_id: str) -> bool:
        """Whether `request_id` falls in the sample: the same answer for the same id."""
        if self._threshold == 0 or self._threshold == 2**64:
            return self._threshold != 0
        digest = hashlib.sha256(_SAMPLE_SALT + request_id.encode("utf-8", "surrogatepass"))
        return int.from_bytes(digest.digest()[:8], "big") < self._threshold

    # control
    def counters(self) -> dict[str, int]:
        """Requests `captured` (written), `dropped` (buffer full or closed) and `failed` (could
        not be formatted or written), and the `rows` written."""
        with self._cond:
            return dict(self._counts)

    def flush(self, timeout: float | None = CLOSE_SECONDS) -> bool:
        """Write every request offered so far now; True once written (or counted as failed),
        False if `timeout` passed first."""
        with self._cond:
            if not self._closed:
                self._flushes_asked += 1
                ticket = self._flushes_asked
                self._cond.notify_all()
                return self._cond.wait_for(lambda: self._flushes_done >= ticket, timeout)
        self._worker.join(timeout)  # closed: the worker writes the last batch and stops
        return not self._worker.is_alive()

    def close(self, timeout: float | None = CLOSE_SECONDS) -> None:
        """Write what is buffered and stop the worker (idempotent). Later offers are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)
        atexit.unregister(self.close)
        if self._worker.is_alive():
            log.warning("capture: the last write did not finish within %ss", timeout)

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the worker thread
    def _run(self) -> None:
        while True:
            with self._cond:
                deadline = time.monotonic() + self._flush_seconds
                while not (
                    self._closed
                    or self._pending_rows >= self._batch_rows
                    or self._flushes_done < self._flushes_asked
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._pending, self._pending_rows = self._pending, [], 0
                ticket, closing = self._flushes_asked, self._closed
            try:
                self._write(batch)
            except Exception as exc:  # the worker outlives any bug in a batch
                self._fail("write", exc, len(batch))
            with self._cond:
                self._flushes_done = ticket
                self._cond.notify_all()
            if closing:
                return

    def _write(self, batch: list[_Offered]) -> None:
        """One object per (model, version, UTC hour) of the batch, lines in offer order."""
        groups: dict[tuple[str, int | None, int], list[tuple[_Offered, bytes]]] = {}
        for item in batch:
            try:
                lines = self._lines(item)
            except Exception as exc:
                self._fail("format", exc, 1)
                continue
            group = (item.model, item.version, int(item.at // 3600))
            groups.setdefault(group, []).append((item, lines))
        for (model, version, _), entries in groups.items():
            first = datetime.fromtimestamp(min(item.at for item, _ in entries), UTC)
            key = layout.capture_key(model, version, first, secrets.token_hex(6))
            try:
                self.sink.put(key, b"".join(lines for _, lines in entries))
            except Exception as exc:
                self._fail("sink", exc, len(entries))
                continue
            with self._cond:
                self._counts["captured"] += len(entries)
                self._counts["rows"] += sum(item.rows for item, _ in entries)

    def _lines(self, item: _Offered) -> bytes:
        """The request's rows as JSON lines (the format in the module doc)."""
        rows = _rows(item.payload)
        predictions = item.answer.get("predictions") or []
        probabilities = item.answer.get("probabilities")
        if len(rows) != len(predictions):
            raise ValueError(f"{len(rows)} rows in the request, {len(predictions)} predictions")
        at = datetime.fromtimestamp(item.at, UTC).isoformat(timespec="milliseconds")
        lines = []
        for index, (row, prediction) in enumerate(zip(rows, predictions, strict=True)):
            record = {
                "request_id": item.request_id,
                "row": index,
                "time": at,
                "model": item.model,
                "version": item.version,
                "inputs": self._scrub(row),
                "prediction": prediction,
                "probabilities": probabilities[index] if probabilities else None,
            }
            # ASCII-only output: a lone surrogate in a string cannot break the UTF-8 encoding
            lines.append(json.dumps(record, allow_nan=False, separators=(",", ":")))
        return ("\n".join(lines) + "\n").encode("ascii")

    def _scrub(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row with each personal column keyed-hashed (a null stays null), or dropped."""
        scrubbed = {}
        for column, value in row.items():
            if column not in self._personal:
                scrubbed[column] = value
            elif self._key is not None:
                scrubbed[column] = None if value is None else privacy.pseudonym(value, self._key)
        return scrubbed

    def _fail(self, kind: str, exc: Exception, requests: int) -> None:
        with self._cond:
            self._counts["failed"] += requests
        message = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        self._warn_once(kind, f"{kind} failed ({message}); requests lost count in 'failed'")

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._logged:  # a rare race logs twice; never once per request
            self._logged.add(kind)
            log.warning("capture: %s (logged once)", message)


def _rows(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Records from either request shape: `{"instances": [{...}]}` or `{"inputs": {col: [...]}}`."""
    if "instances" in payload:
        return list(payload["instances"])
    columns = payload["inputs"]
    count = len(next(iter(columns.values()), ()))
    return [{column: values[i] for column, values in columns.items()} for i in range(count)]
