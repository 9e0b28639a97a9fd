"""The inference core that ships inside every endpoint: fetch, verify, load, validate, predict.

Depends on numpy, onnxruntime, the standard library and the stdlib-only vocabulary in
`contract/`: it is what a Lambda or an Azure Function imports on a cold start, so its import
time and size are budgets (onnxruntime is imported when a model loads; boto3 only for an
s3:// source, azure-storage-blob only for a blob URL: deploy/azure_blob.py). Nothing here
ever unpickles anything; the model is `model.onnx`.

A request is validated against the model card's input schema before ONNX sees it: every
value that onnxruntime would choke on or silently score (an integer beyond float range, ±inf,
a lone surrogate, an unseen category) is refused with a RequestError naming the field.
The one exception is the rule the card's schema may record for unseen categories
(contract.serving.UNSEEN_KEY): with "missing", a value outside a complete list of categories
is scored as a missing value and the answer lists it under "unseen".
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import numpy as np

from contract.emulators import LOOPBACK_HOSTS  # plain http:// only for these
from contract.serving import (
    MAX_ECHO_CHARS,
    MAX_ROWS,
    MAX_UNSEEN_NOTES,
    UNSEEN_ERROR,
    UNSEEN_KEY,
    UNSEEN_MISSING,
    UNSEEN_RULES,
)

MANIFEST = "MANIFEST.json"
ONNX = "model.onnx"
CARD = "model_card.json"
TARBALL = "model.tar.gz"
MISSING = "__missing__"  # the level a missing category maps to (as in ml/data.py)

FLOAT32_MAX = float(np.finfo(np.float32).max)  # a number beyond it would be scored as ±inf
MAX_STRING_CHARS = 1024  # longest categorical value accepted (no category is this long)
# ml/data.input_schema keeps at most this many categories per column: a list this long may
# be cut short, so an unseen value is only refused when the list is shorter (complete).
MAX_SCHEMA_CATEGORIES = 200
NUMERIC_INPUT = "numeric"  # the ONNX input holding every numeric feature, [N, n] float32
DOWNLOAD_TIMEOUT_SECONDS = 60.0


class IntegrityError(Exception):
    """A file of the artifact is missing or differs from MANIFEST.json; names the file."""


class RequestError(ValueError):
    """A request that cannot be scored: an HTTP status, a message, and the field at fault."""

    def __init__(self, message: str, *, status: int = 422, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


_echo_repr = reprlib.Repr()
_echo_repr.maxstring = _echo_repr.maxother = _echo_repr.maxlong = MAX_ECHO_CHARS
_echo_repr.maxlist = _echo_repr.maxdict = 4
_echo_repr.maxlevel = 2


def echo(value: Any) -> str:
    """A repr of `value` for an error message: never more than MAX_ECHO_CHARS characters,
    and never the cost of printing a huge value first."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    text = _echo_repr.repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 1] + "…"


def _name(key: Any) -> str:
    """A field name as it appears in a path: truncated like any echoed value."""
    text = key if isinstance(key, str) else echo(key)
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 1] + "…"


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
    listing = _listing(manifest_path)
    for name, expected in listing:
        path = directory / name
        if not path.is_file():
            raise IntegrityError(f"{name}: listed in the manifest but missing")
        if sha256_file(path) != expected:
            raise IntegrityError(f"{name}: sha256 differs from the manifest (tampered or corrupt)")
    return dict(listing)


def _listing(manifest_path: Path) -> list[tuple[str, str]]:
    """(file name, sha256) for each file MANIFEST.json lists, sorted; IntegrityError for a
    malformed manifest or a name that is not a plain file name."""
    try:
        files: dict[str, str] = json.loads(manifest_path.read_text())["files"]
        listing = sorted(files.items())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{manifest_path}: malformed manifest ({exc})") from None
    for name, _ in listing:
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise IntegrityError(f"{name!r}: not a file name the manifest may list")
    return listing


# --- fetching an artifact -------------------------------------------------------------------


def fetch(source: str | Path, cache_dir: Path | None = None) -> Path:
    """A verified artifact directory for `source`: an artifact directory, a model.tar.gz, or
    an s3:// / https:// location of one (a URI not ending in .tar.gz names the artifact's
    prefix, which holds model.tar.gz; under a blob URL, deploy/azure_blob.py, the files the
    prefix's MANIFEST.json lists). Downloads and unpacks into `cache_dir`."""
    text = str(source)
    scheme = urlsplit(text).scheme if "://" in text else ""
    if scheme in ("", "file"):
        path = Path(urlsplit(text).path if scheme == "file" else text)
        if path.is_dir():
            if not (path / MANIFEST).is_file() and (path / TARBALL).is_file():
                return _unpacked(path / TARBALL, _cache(cache_dir))  # e.g. /opt/ml/model
            verify_manifest(path)
            return path
        if path.is_file():
            return _unpacked(path, _cache(cache_dir))
        raise FileNotFoundError(f"{text}: no artifact directory or model.tar.gz there")
    target = _cache(cache_dir)
    from deploy import azure_blob  # standard library until a blob is read

    blob = azure_blob.parse(text)
    if blob is not None and not text.endswith(".tar.gz"):
        return _download_blob_artifact(azure_blob.Container(blob), blob, target / "model")
    tarball = target / TARBALL
    url = text if text.endswith(".tar.gz") else text.rstrip("/") + "/" + TARBALL
    if blob is not None:
        azure_blob.Container(blob).download(blob.name, tarball)
    elif scheme == "s3":
        _download_s3(url, tarball)
    elif scheme == "https" or (scheme == "http" and urlsplit(url).hostname in LOOPBACK_HOSTS):
        _download_http(url, tarball)
    else:
        raise ValueError(f"{text}: unsupported model source (a path, s3:// or https://)")
    return _unpacked(tarball, target / "model")


def _is_artifact_directory(source: str | Path) -> bool:
    """A local artifact directory: loaded where it is, nothing copied."""
    text = str(source)
    scheme = urlsplit(text).scheme if "://" in text else ""
    if scheme not in ("", "file"):
        return False
    path = Path(urlsplit(text).path if scheme == "file" else text)
    return (path / MANIFEST).is_file()


def _cache(cache_dir: Path | None) -> Path:
    if cache_dir is None:
        import tempfile  # off the cold start of an endpoint that loads a directory

        return Path(tempfile.mkdtemp(prefix="tandem-model-"))
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return Path(cache_dir)


def _download_s3(uri: str, dest: Path) -> None:
    import boto3  # the Lambda runtime has it; nothing else needs it

    parts = urlsplit(uri)
    boto3.client("s3").download_file(parts.netloc, parts.path.lstrip("/"), str(dest))


def _download_blob_artifact(container: Any, location: Any, dest: Path) -> Path:
    """The artifact under a blob prefix: MANIFEST.json, then every file it lists, verified.
    (Blob stores need no model.tar.gz; the files are fetched as the manifest names them.)"""
    dest.mkdir(parents=True, exist_ok=True)
    container.download(location.child(MANIFEST), dest / MANIFEST)
    for name, _ in _listing(dest / MANIFEST):
        container.download(location.child(name), dest / name)
    verify_manifest(dest)
    return dest


def _download_http(url: str, dest: Path) -> None:
    import shutil
    import urllib.request

    with (
        urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response,
        dest.open("wb") as out,
    ):
        shutil.copyfileobj(response, out)


def _unpacked(tarball: Path, dest: Path) -> Path:
    """Extract the artifact's regular top-level files from `tarball` into `dest`, verified."""
    import gzip  # only a tarball needs these; an artifact directory loads without them
    import io
    import tarfile
    import zlib

    dest.mkdir(parents=True, exist_ok=True)
    try:
        # the whole gzip stream is read, so a damaged trailer (CRC, length) is refused too
        unpacked = gzip.decompress(Path(tarball).read_bytes())
        with tarfile.open(fileobj=io.BytesIO(unpacked), mode="r:") as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.isfile() and "/" not in m.name and not m.name.startswith(".")
            ]
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise IntegrityError(f"{TARBALL}: damaged ({exc})") from None
    verify_manifest(dest)
    return dest


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One feature: its name, whether it is numeric, and (for a categorical one whose list of
    categories is complete) the values it accepts."""

    name: str
    numeric: bool
    categories: frozenset[str] | None = None


def columns_from_schema(schema: Mapping[str, Any]) -> list[Column]:
    columns = []
    for entry in schema["features"]:
        numeric = entry["type"] == "numeric"
        categories = None
        listed = entry.get("categories")
        complete = entry.get(
            "categories_complete", listed is not None and len(listed) < MAX_SCHEMA_CATEGORIES
        )
        if not numeric and listed is not None and complete:
            categories = frozenset(map(str, listed))
        columns.append(Column(entry["name"], numeric, categories))
    return columns


def safe_names(columns: list[str]) -> dict[str, str]:
    """column -> its name inside the ONNX graph: the column's own name when it is an
    identifier, else one made of letters, digits and underscores (`sepal length (cm)` ->
    `sepal_length_cm`), unique among them. The card records the mapping; requests keep
    using the column names."""
    mapping: dict[str, str] = {}
    taken = {c for c in columns if _IDENTIFIER.fullmatch(c)}
    for column in columns:
        if _IDENTIFIER.fullmatch(column):
            mapping[column] = column
            continue
        base = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", column)).strip("_") or "column"
        base = base if _IDENTIFIER.fullmatch(base) else f"c_{base}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        mapping[column] = name
    return mapping


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def packed_inputs(columns: list[Column]) -> list[dict[str, Any]]:
    """The ONNX layout Tandem builds: one [N, n] float tensor for every numeric feature (in
    schema order), one [N, 1] string tensor per categorical feature (named by `safe_names`)."""
    safe = safe_names([c.name for c in columns])
    names = {safe[c.name] for c in columns if not c.numeric}
    numeric_name = NUMERIC_INPUT
    while numeric_name in names:  # a categorical feature called "numeric" keeps its name
        numeric_name += "_"
    numeric = [c.name for c in columns if c.numeric]
    layout = [{"name": numeric_name, "dtype": "float32", "columns": numeric}] if numeric else []
    return layout + [
        {"name": safe[c.name], "dtype": "string", "columns": [c.name]}
        for c in columns
        if not c.numeric
    ]


def per_column_inputs(columns: list[Column]) -> list[dict[str, Any]]:
    """The layout of artifacts built before packed inputs: one [N, 1] tensor per feature."""
    return [
        {"name": c.name, "dtype": "float32" if c.numeric else "string", "columns": [c.name]}
        for c in columns
    ]


class Model:
    """A verified ONNX model, the input schema it was trained on, and how to feed it."""

    def __init__(
        self,
        onnx_path: Path,
        columns: list[Column],
        card: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        version: int | None = None,
        inputs: list[dict[str, Any]] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.card = dict(card or {})
        spec = self.card.get("spec") or {}
        self.name = name or spec.get("name") or Path(onnx_path).parent.name
        self.version = version
        self.columns = columns
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one request at a time per worker; no thread spin-up
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if inputs is None:
            inputs = self.card.get("onnx_inputs")
        if inputs is None:  # no record: an old artifact has one input per feature
            legacy = per_column_inputs(columns)
            packed = packed_inputs(columns)
            inputs = legacy if sorted(graph_inputs) == sorted(i["name"] for i in legacy) else packed
        if sorted(graph_inputs) != sorted(i["name"] for i in inputs):
            raise IntegrityError(
                f"{ONNX}: its inputs {graph_inputs} are not the layout "
                f"{[i['name'] for i in inputs]} its card records"
            )
        self.inputs = inputs
        self._numeric = [c for c in columns if c.numeric]
        self._strings = [c for c in columns if not c.numeric]
        numeric_index = {c.name: j for j, c in enumerate(self._numeric)}
        # each float input takes these columns of the validated [N, n_numeric] matrix
        self._numeric_feeds = [
            (i["name"], [numeric_index[c] for c in i["columns"]])
            for i in inputs
            if i["dtype"] != "string"
        ]
        self._string_feeds = [
            (i["name"], i["columns"][0]) for i in inputs if i["dtype"] == "string"
        ]
        self._features = frozenset(c.name for c in columns)
        names = [c.name for c in self._numeric]
        self._numbers: Callable[[dict[str, Any]], tuple[Any, ...]] | None = None
        if len(names) == 1:  # itemgetter of one name returns the value, not a tuple
            self._numbers = lambda row, name=names[0]: (row[name],)
        elif names:
            self._numbers = operator.itemgetter(*names)
        self._personal = frozenset(spec.get("personal_data") or ())
        schema = self.card.get("input_schema") or {}
        rule = schema.get(UNSEEN_KEY, UNSEEN_ERROR)  # a card from before the rule: refuse
        if rule not in UNSEEN_RULES:
            raise IntegrityError(
                f"{CARD}: input_schema.{UNSEEN_KEY} is {echo(rule)}; expected one of "
                f"{list(UNSEEN_RULES)}"
            )
        self.unseen_rule: str = rule
        self._column_order = {c.name: j for j, c in enumerate(self._strings)}

        outputs = self.session.get_outputs()
        if len(outputs) >= 2:  # a classifier: label, probabilities (zipmap off)
            self._output = outputs[1].name
            width = outputs[1].shape[1] if len(outputs[1].shape) == 2 else None
            # answers name classes by the spec's own labels ("yes"), as the card records them
            self.classes: list[Any] | None = (
                self.card.get("labels")
                or self.card.get("classes")
                or (list(range(width)) if isinstance(width, int) else None)
            )
            two = self.classes is None or len(self.classes) == 2
            self.task: str = self.card.get("task") or ("binary" if two else "multiclass")
        else:
            self._output = outputs[0].name
            self.classes = None
            self.task = self.card.get("task") or "regression"

    @classmethod
    def load(
        cls,
        source: str | Path,
        *,
        name: str | None = None,
        version: int | None = None,
        cache_dir: Path | None = None,
        verify: bool = True,
    ) -> Model:
        """Load an artifact from a directory, a model.tar.gz, an s3:// URI or an https:// URL,
        verifying every file against MANIFEST.json first (IntegrityError names the file).

        Without a `cache_dir`, what had to be downloaded or unpacked goes to a temporary
        directory that is removed once the model is in memory."""
        if not verify:
            return cls._from_directory(Path(source), name, version)
        if cache_dir is not None or _is_artifact_directory(source):
            return cls._from_directory(fetch(source, cache_dir), name, version)
        import tempfile  # off the cold start of an endpoint that loads a directory

        with tempfile.TemporaryDirectory(prefix="tandem-model-") as scratch:
            return cls._from_directory(fetch(source, Path(scratch)), name, version)

    @classmethod
    def _from_directory(cls, directory: Path, name: str | None, version: int | None) -> Model:
        card = json.loads((directory / CARD).read_text())
        return cls(
            directory / ONNX,
            columns_from_schema(card["input_schema"]),
            card,
            name=name,
            version=version,
        )

    # --- requests ---------------------------------------------------------------------------

    def predict_payload(
        self, payload: object, *, max_rows: int = MAX_ROWS, request_id: str | None = None
    ) -> dict[str, Any]:
        """Validate a request body (already parsed JSON) and score it.

        `{"instances": [{field: value, ...}, ...]}` (records) or `{"inputs": {field: [...]}}`
        (columns). Returns {"model", "version", ["request_id",] "task", "classes",
        "predictions", "probabilities"}; raises RequestError (with .status and .field).
        """
        if type(payload) is not dict or not payload:
            raise RequestError(
                'the body must be a JSON object: {"instances": [...]} or {"inputs": {...}}',
                status=422,
            )
        if len(payload) != 1:
            extra = sorted(_name(k) for k in payload if k not in ("instances", "inputs"))
            if extra:
                raise RequestError(
                    f"{extra[0]}: unknown field; the body holds 'instances' or 'inputs'",
                    field=extra[0],
                )
            raise RequestError(
                "send either 'instances' (records) or 'inputs' (columns), not both",
                field="inputs",
            )
        unseen: list[tuple[int, str, str]] = []  # (row, field, value) scored as missing
        if "instances" in payload:
            numeric, strings = self._from_records(payload["instances"], max_rows, unseen)
        elif "inputs" in payload:
            numeric, strings = self._from_columns(payload["inputs"], max_rows, unseen)
        else:
            key = _name(next(iter(payload)))
            raise RequestError(
                f"{key}: unknown field; the body holds 'instances' or 'inputs'", field=key
            )
        return self._answer(self._run(numeric, strings), request_id, unseen)

    def _from_records(
        self, rows: object, max_rows: int, unseen: list[tuple[int, str, str]] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """`unseen` collects the (row, field, value) scored as missing under that rule."""
        if unseen is None:
            unseen = []
        if type(rows) is not list:
            raise RequestError(
                f"instances: expected a list of objects, got {echo(rows)}", field="instances"
            )
        self._check_count(len(rows), max_rows, "instances")
        numbers = self._numbers
        matrix: list[Any] = []
        strings: dict[str, list[str]] = {c.name: [] for c in self._strings}
        n_features = len(self.columns)
        for i, row in enumerate(rows):
            if type(row) is not dict:
                raise RequestError(
                    f"instances[{i}]: expected an object, got {echo(row)}",
                    field=f"instances[{i}]",
                )
            # the fast path, a few C calls per row: every numeric feature present, an int or
            # a float within float32's range, no NaN (sum is NaN then); else value by value
            if numbers is not None:
                try:
                    values = numbers(row)
                except KeyError:
                    values = None
                if not (
                    values is not None
                    and set(map(type, values)) <= _PLAIN_NUMBERS
                    and min(values) >= -FLOAT32_MAX
                    and max(values) <= FLOAT32_MAX
                    and (total := sum(values)) == total
                ):
                    values = self._numeric_row(row, i)
                matrix.append(values)
            for column in self._strings:
                value = row.get(column.name, _ABSENT)
                if type(value) is str and _accepted(value, column):
                    strings[column.name].append(value)
                elif value is None:
                    strings[column.name].append(MISSING)
                else:
                    field = f"instances[{i}].{column.name}"
                    strings[column.name].append(self._unseen(value, column, i, field, unseen))
            if len(row) != n_features:
                self._check_extra(row, f"instances[{i}].")
        numeric = (
            np.array(matrix, dtype=np.float32)
            if numbers is not None
            else np.empty((len(rows), 0), dtype=np.float32)
        )
        return numeric, {k: _string_column(v) for k, v in strings.items()}

    def _numeric_row(self, row: dict[str, Any], i: int) -> list[float]:
        """A row's numeric features value by value: null is NaN; anything else it cannot
        score raises a RequestError naming the field."""
        values = []
        for column in self._numeric:
            value = row.get(column.name, _ABSENT)
            kind = type(value)
            if (kind is float or kind is int) and -FLOAT32_MAX <= value <= FLOAT32_MAX:
                values.append(value)
            elif value is None:
                values.append(math.nan)
            else:
                values.append(_number(value, f"instances[{i}].{column.name}"))
        return values

    def _from_columns(
        self, inputs: object, max_rows: int, unseen: list[tuple[int, str, str]] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """`unseen` collects the (row, field, value) scored as missing under that rule."""
        if unseen is None:
            unseen = []
        if type(inputs) is not dict:
            raise RequestError(
                f"inputs: expected an object of columns, got {echo(inputs)}", field="inputs"
            )
        n_rows = None
        for column in self.columns:
            values = inputs.get(column.name, _ABSENT)
            field = f"inputs.{column.name}"
            if values is _ABSENT:
                raise RequestError(f"{field}: required (a list, null where unknown)", field=field)
            if type(values) is not list:
                raise RequestError(
                    f"{field}: expected a list of values, got {echo(values)}", field=field
                )
            if n_rows is None:
                n_rows = len(values)
                self._check_count(n_rows, max_rows, field)
            elif len(values) != n_rows:
                raise RequestError(
                    f"{field}: has {len(values)} values, the other columns {n_rows}", field=field
                )
        if len(inputs) != len(self.columns):
            self._check_extra(inputs, "inputs.")
        n_rows = n_rows or 0
        numeric = np.empty((n_rows, len(self._numeric)), dtype=np.float32)
        for j, column in enumerate(self._numeric):
            checked = []
            for i, value in enumerate(inputs[column.name]):
                kind = type(value)
                if (kind is float or kind is int) and -FLOAT32_MAX <= value <= FLOAT32_MAX:
                    checked.append(value)
                elif value is None:
                    checked.append(math.nan)
                else:
                    checked.append(_number(value, f"inputs.{column.name}[{i}]"))
            numeric[:, j] = checked
        strings = {}
        for column in self._strings:
            field = f"inputs.{column.name}"
            checked_strings = []
            for i, value in enumerate(inputs[column.name]):
                if type(value) is str and _accepted(value, column):
                    checked_strings.append(value)
                elif value is None:
                    checked_strings.append(MISSING)
                else:
                    checked_strings.append(self._unseen(value, column, i, f"{field}[{i}]", unseen))
            strings[column.name] = _string_column(checked_strings)
        return numeric, strings

    def _unseen(
        self, value: Any, column: Column, row: int, field: str, unseen: list[tuple[int, str, str]]
    ) -> str:
        """A categorical value `_accepted` refused: under the "missing" rule an unseen
        category is scored as a missing one (and noted in `unseen`); anything else, or any
        value under the "error" rule, raises the RequestError naming the field. Only values
        off the fast path come here, so a request of known values pays nothing for the rule."""
        if (
            self.unseen_rule == UNSEEN_MISSING
            and type(value) is str
            and column.categories is not None
            and value not in column.categories
            and len(value) <= MAX_STRING_CHARS
            and _encodable(value)
        ):
            unseen.append((row, column.name, value))
            return MISSING
        _refuse_string(value, column, field)

    @staticmethod
    def _check_count(n: int, max_rows: int, field: str) -> None:
        if n == 0:
            raise RequestError(f"{field}: no rows to score", field=field)
        if n > max_rows:
            raise RequestError(
                f"{field}: {n} rows, more than the {max_rows} this endpoint takes per request",
                status=413,
                field=field,
            )

    def _check_extra(self, fields: Mapping[Any, Any], prefix: str) -> None:
        """Refuse a missing feature or an unknown field; the spec's personal-data columns may
        ride along (never fed to the model, only to the capture)."""
        for column in self.columns:
            if column.name not in fields:
                field = f"{prefix}{column.name}"
                raise RequestError(f"{field}: required (null if unknown)", field=field)
        for key in fields:
            if key not in self._features and key not in self._personal:
                field = f"{prefix}{_name(key)}"
                raise RequestError(
                    f"{field}: unknown field; this model takes {echo(sorted(self._features))}",
                    field=field,
                )

    # --- scoring ------------------------------------------------------------------------------

    def _run(self, numeric: np.ndarray, strings: Mapping[str, np.ndarray]) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {}
        for input_name, indices in self._numeric_feeds:
            if len(indices) == numeric.shape[1]:
                feeds[input_name] = numeric
            else:
                feeds[input_name] = np.ascontiguousarray(numeric[:, indices])
        for input_name, column in self._string_feeds:
            feeds[input_name] = strings[column]
        return self.session.run([self._output], feeds)[0]

    def _answer(
        self,
        output: np.ndarray,
        request_id: str | None,
        unseen: list[tuple[int, str, str]] | None = None,
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {"model": self.name, "version": self.version}
        if request_id is not None:
            answer["request_id"] = request_id
        answer["task"] = self.task
        answer["classes"] = self.classes
        if self.task == "regression":
            answer["predictions"] = output.reshape(-1).tolist()
            answer["probabilities"] = None
        else:
            shares = output.tolist()
            best = [row.index(max(row)) for row in shares]  # the first of equal maxima
            classes = self.classes
            answer["predictions"] = [classes[k] for k in best] if classes else best
            answer["probabilities"] = shares
        if unseen:  # only then: an answer with every value known is what it always was
            answer[UNSEEN_KEY] = self._unseen_note(unseen)
        return answer

    def _unseen_note(self, unseen: list[tuple[int, str, str]]) -> dict[str, Any]:
        """{"count": n, "values": [{"row", "field", "value"}, ...]}: every value scored as
        missing counted, the first few (by row, then feature) listed, each value cut short
        like any echoed value. Both request shapes give the same note."""
        order = self._column_order
        first = sorted(unseen, key=lambda note: (note[0], order[note[1]]))[:MAX_UNSEEN_NOTES]
        return {
            "count": len(unseen),
            "values": [
                {"row": row, "field": field, "value": _name(value)} for row, field, value in first
            ],
        }

    # --- batch scoring for training and evaluation (trusted columns, no validation) ----------

    def feeds_from_columns(self, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Column arrays (as in a DataFrame) to ONNX feeds; missing numerics are NaN."""
        numeric = (
            np.column_stack([np.asarray(columns[c.name], dtype=np.float32) for c in self._numeric])
            if self._numeric
            else np.empty((len(next(iter(columns.values()))), 0), np.float32)
        )
        strings = {
            c.name: np.asarray(columns[c.name]).astype(object).reshape(-1, 1) for c in self._strings
        }
        feeds: dict[str, np.ndarray] = {}
        for input_name, indices in self._numeric_feeds:
            feeds[input_name] = np.ascontiguousarray(numeric[:, indices])
        for input_name, column in self._string_feeds:
            feeds[input_name] = strings[column]
        return feeds

    def scores(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's answer per row: [N, k] class probabilities, or [N] predicted values."""
        output = self.session.run([self._output], dict(feeds))[0]
        return output.reshape(-1) if self.task == "regression" else output

    def predict_proba(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probability of the positive (last) class, one per row."""
        return self.scores(feeds)[:, -1]

    def predict(self, rows: list[dict[str, Any]], threshold: float = 0.5) -> list[dict[str, Any]]:
        """Validated records to [{"label", "probability"}] (the positive class's probability
        against `threshold`): the shape the lifecycle's latency gate and tests use."""
        numeric, strings = self._from_records(rows, max_rows=len(rows) if type(rows) is list else 1)
        proba = self._run(numeric, strings)[:, -1]
        return [{"label": int(p >= threshold), "probability": float(p)} for p in proba]


_ABSENT = object()


def _string_column(values: list[str]) -> np.ndarray:
    """An [N, 1] object array of strings (filling an empty one beats np.array's inference)."""
    column = np.empty((len(values), 1), dtype=object)
    column[:, 0] = values
    return column


_PLAIN_NUMBERS = frozenset({int, float})


def _number(value: Any, field: str) -> float:
    """The slow path of a numeric field: why `value` is refused, or its float value."""
    if value is _ABSENT:
        raise RequestError(f"{field}: required (null if unknown)", field=field)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise RequestError(f"{field}: expected a number, got {echo(value)}", field=field)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if math.isnan(number):
        raise RequestError(f"{field}: NaN is not a number it can score", field=field)
    if not -FLOAT32_MAX <= number <= FLOAT32_MAX:
        raise RequestError(
            f"{field}: {echo(value)} is outside the float32 range (±{FLOAT32_MAX:.7g})",
            field=field,
        )
    return number


def _accepted(value: str, column: Column) -> bool:
    """A categorical string it can score: bounded, valid Unicode, a known category (when the
    list of categories is complete)."""
    return (
        len(value) <= MAX_STRING_CHARS
        and (value.isascii() or _encodable(value))
        and (column.categories is None or value in column.categories)
    )


def _refuse_string(value: Any, column: Column, field: str) -> NoReturn:
    """Raise the RequestError saying why `value` is not a categorical value it can score."""
    if value is _ABSENT:
        raise RequestError(f"{field}: required (null if unknown)", field=field)
    if not isinstance(value, str):
        raise RequestError(f"{field}: expected a string, got {echo(value)}", field=field)
    if len(value) > MAX_STRING_CHARS:
        raise RequestError(
            f"{field}: {len(value)} characters, more than {MAX_STRING_CHARS}: {echo(value)}",
            field=field,
        )
    if not _encodable(value):
        raise RequestError(f"{field}: not a valid Unicode string (lone surrogate)", field=field)
    if column.categories is not None and value not in column.categories:
        known = sorted(column.categories)
        raise RequestError(
            f"{field}: unknown category {echo(value)}; expected one of {echo(known)}",
            field=field,
        )
    raise RequestError(f"{field}: not a value it can score: {echo(value)}", field=field)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
