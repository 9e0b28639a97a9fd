"""The inference core that ships inside every endpoint: verify, load, validate, predict.

Depends on numpy, onnxruntime and the standard library only: it is what a Lambda or an
Azure Function imports on a cold start, so its import time and size are budgets. Nothing
here ever unpickles anything; the model is `model.onnx`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "MANIFEST.json"
MISSING = "__missing__"  # the level a missing category maps to (as in ml/data.py)


class IntegrityError(Exception):
    """A file of the artifact is missing or differs from MANIFEST.json; names the file."""


class RequestError(ValueError):
    """A request that cannot be scored; the message says what was wrong (an HTTP 400)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest(directory: Path) -> dict[str, str]:
    """Check every file listed in MANIFEST.json against its sha256; return the listing."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise IntegrityError(f"{manifest_path}: missing manifest")
    try:
        files: dict[str, str] = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{manifest_path}: malformed manifest ({exc})") from None
    for name, expected in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            raise IntegrityError(f"{name}: listed in the manifest but missing")
        if sha256_file(path) != expected:
            raise IntegrityError(f"{name}: sha256 differs from the manifest (tampered or corrupt)")
    return files


@dataclass(frozen=True)
class Column:
    name: str
    numeric: bool


def columns_from_schema(schema: dict[str, Any]) -> list[Column]:
    return [Column(c["name"], c["type"] == "numeric") for c in schema["features"]]


class Model:
    """A verified ONNX model and the input schema it was trained on."""

    def __init__(self, onnx_path: Path, columns: list[Column], card: dict[str, Any] | None = None):
        import onnxruntime as ort

        self.card = card or {}
        self.columns = columns
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one request at a time per worker; no thread spin-up
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._proba_output = self.session.get_outputs()[1].name

    @classmethod
    def load(cls, directory: Path, *, verify: bool = True) -> Model:
        """Load an artifact directory, verifying every file against MANIFEST.json first."""
        directory = Path(directory)
        if verify:
            verify_manifest(directory)
        card = json.loads((directory / "model_card.json").read_text())
        return cls(directory / "model.onnx", columns_from_schema(card["input_schema"]), card)

    def feeds_from_columns(self, columns: dict[str, Any]) -> dict[str, np.ndarray]:
        """Column arrays (as in a DataFrame) to ONNX feeds; missing numerics are NaN."""
        feeds = {}
        for column in self.columns:
            values = np.asarray(columns[column.name])
            if column.numeric:
                feeds[column.name] = values.astype(np.float32).reshape(-1, 1)
            else:
                feeds[column.name] = values.astype(object).reshape(-1, 1)
        return feeds

    def feeds_from_rows(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Validate JSON rows against the schema and build feeds; errors name row and field."""
        if not isinstance(rows, list) or not rows:
            raise RequestError("'instances' must be a non-empty list of objects")
        known = {c.name for c in self.columns}
        feeds: dict[str, list[Any]] = {c.name: [] for c in self.columns}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(f"instances[{i}]: expected an object, got {type(row).__name__}")
            unknown = sorted(set(row) - known)
            if unknown:
                raise RequestError(f"instances[{i}]: unknown field(s) {unknown}")
            for column in self.columns:
                if column.name not in row:
                    raise RequestError(f"instances[{i}].{column.name}: required (null if unknown)")
                value = row[column.name]
                if column.numeric:
                    if value is None:
                        value = math.nan
                    elif isinstance(value, bool) or not isinstance(value, int | float):
                        raise RequestError(
                            f"instances[{i}].{column.name}: expected a number, got {value!r}"
                        )
                elif value is None:
                    value = MISSING
                elif not isinstance(value, str):
                    raise RequestError(
                        f"instances[{i}].{column.name}: expected a string, got {value!r}"
                    )
                feeds[column.name].append(value)
        return {
            c.name: np.asarray(feeds[c.name], dtype=np.float32 if c.numeric else object).reshape(
                -1, 1
            )
            for c in self.columns
        }

    def predict_proba(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Probability of the positive class, one per row."""
        return self.session.run([self._proba_output], feeds)[0][:, 1]

    def predict(self, rows: list[dict[str, Any]], threshold: float = 0.5) -> list[dict[str, Any]]:
        proba = self.predict_proba(self.feeds_from_rows(rows))
        return [{"label": int(p >= threshold), "probability": float(p)} for p in proba]
