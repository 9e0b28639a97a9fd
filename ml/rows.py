"""Rows a client sends to an endpoint, read from JSON or CSV text (`tandem predict`).

JSON is taken as written (a list of row objects, one object, `{"instances": [...]}` or
`{"inputs": {column: [...]}}`); the endpoint judges it. CSV has no types, so each cell is typed
by the live model's input schema: numeric features become numbers, an empty cell is missing
(null), everything else stays text.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

from ml.clouds.base import Stack, primary_version
from ml.errors import DataError, NotFoundError

Schema = dict[str, Any]


def rows_from_text(text: str, schema: Callable[[], Schema]) -> list[dict[str, Any]]:
    """The rows in `text` (JSON when it starts with `[` or `{`, else CSV); `schema` is called
    only for CSV."""
    stripped = text.lstrip()
    if not stripped:
        raise DataError("no rows: the input is empty")
    if stripped[0] in "[{":
        return _json_rows(stripped)
    return _csv_rows(text, schema())


def _json_rows(text: str) -> list[dict[str, Any]]:
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise DataError(f"not valid JSON: {exc}") from None
    if isinstance(payload, dict) and "instances" in payload:
        payload = payload["instances"]
    elif isinstance(payload, dict) and isinstance(payload.get("inputs"), dict):
        columns = payload["inputs"]
        lengths = {len(v) for v in columns.values() if isinstance(v, list)}
        if len(lengths) != 1 or not all(isinstance(v, list) for v in columns.values()):
            raise DataError('"inputs" must map each column to a list, all of one length')
        rows = zip(*columns.values(), strict=True)
        payload = [dict(zip(columns, values, strict=True)) for values in rows]
    elif isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list) or not all(isinstance(row, dict) for row in payload):
        raise DataError("expected row objects: a list of objects, one object, or "
                        '{"instances": [...]} / {"inputs": {...}}')  # fmt: skip
    return payload


def _csv_rows(text: str, schema: Schema) -> list[dict[str, Any]]:
    numeric = {f["name"] for f in schema["features"] if f["type"] == "numeric"}
    rows = []
    reader = csv.DictReader(io.StringIO(text))
    for line, record in enumerate(reader, start=2):
        if None in record:
            raise DataError(f"CSV line {line}: more cells than the header has columns")
        row: dict[str, Any] = {}
        for name, cell in record.items():
            cell = (cell or "").strip()
            if not cell:
                row[name] = None
            elif name in numeric:
                try:
                    row[name] = float(cell)
                except ValueError:
                    raise DataError(
                        f"CSV line {line}: {name} is numeric, got {cell[:60]!r}"
                    ) from None
            else:
                row[name] = cell
        rows.append(row)
    if not rows:
        raise DataError("no rows: the CSV has a header and nothing else")
    return rows


def live_schema(stack: Stack, model: str) -> Schema:
    """The input schema of the version that takes `model`'s traffic on `stack`."""
    from ml.lifecycle import read_card

    live = stack.endpoint.current(model)
    if live is None:
        raise NotFoundError(f"model {model!r} is not deployed on stack {stack.name!r}")
    version = stack.registry.get_version(model, primary_version(live))
    return read_card(stack, version.artifact_uri)["input_schema"]
