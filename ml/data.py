"""Load, validate and split a dataset against its spec; record its schema and content hash.

Personal-data columns (spec.personal_data) are never features, the target or the sensitive
attribute (the spec refuses that), so they never reach the schema, the baseline or the card;
`validate` drops them with every other column the spec does not use. No error message here
prints a value of a personal column.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from contract.serving import UNSEEN_KEY
from ml import tasks
from ml.datasets import BUILTIN_SCHEMES, load_builtin
from ml.errors import DataError

MISSING = "__missing__"

if TYPE_CHECKING:
    from ml.clouds.base import ArtifactStore
    from ml.spec import ModelSpec


def _parse(data: bytes | Path, name: str, fmt: str) -> pd.DataFrame:
    if fmt == "auto":
        fmt = "parquet" if name.endswith((".parquet", ".pq")) else "csv"
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        if fmt == "parquet":
            return pd.read_parquet(source)
        return pd.read_csv(source)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{name}: cannot read as {fmt}: {exc}") from None


def load_frame(source: str, store: ArtifactStore | None = None, fmt: str = "auto") -> pd.DataFrame:
    """Read a dataset from a built-in URI, a local path, or a URI in an artifact store."""
    scheme = urlparse(source).scheme
    if scheme in BUILTIN_SCHEMES:
        return load_builtin(source)
    if scheme in ("", "file") or len(scheme) == 1:  # a path (len 1: a Windows drive letter)
        path = Path(urlparse(source).path if scheme == "file" else source)
        if not path.is_file():
            raise DataError(f"{source}: no such data file")
        return _parse(path, path.name, fmt)
    if store is None:
        raise DataError(f"{source}: a {scheme}:// dataset needs the stack's artifact store")
    return _parse(store.get_bytes(source), source, fmt)


def validate(frame: pd.DataFrame, spec: ModelSpec, origin: str = "dataset") -> pd.DataFrame:
    """Check the frame against the spec and return the spec's columns with canonical dtypes.

    Numeric features become float64, categorical ones str (missing stays missing). The target
    becomes its class index (`class_labels` order: binary 1 = the positive label) or, for a
    regression, float64.
    """
    if frame.empty:
        raise DataError(f"{origin}: the dataset is empty")
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise DataError(f"{origin}: missing column(s) {missing}; it has {list(frame.columns)}")
    out = frame[spec.columns].copy()
    for name in spec.numeric:
        column = out[name]
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            coerced = pd.to_numeric(column, errors="coerce")
            bad = column[coerced.isna() & column.notna()]
            if len(bad):
                shown = "a value" if name in spec.personal_data else repr(bad.iloc[0])
                raise DataError(
                    f"{origin}: column {name!r} is numeric in the spec but holds "
                    f"{shown} (row {bad.index[0]}) and {len(bad) - 1} more "
                    "non-numeric values"
                )
            column = coerced
        out[name] = column.astype("float64")
        infinite = np.isinf(out[name])
        if infinite.any():
            raise DataError(
                f"{origin}: column {name!r} holds {int(infinite.sum())} infinite value(s) "
                f"(first at row {out.index[infinite.argmax()]}); use a finite number or leave "
                "the cell empty"
            )
    for name in spec.feature_names:
        if out[name].isna().all():
            raise DataError(
                f"{origin}: feature {name!r} has no values (every row is missing): a model "
                "cannot learn from it; fill it in or drop it from the spec's features"
            )
    for name in spec.categorical:
        # Missing categories become their own level, here and at the endpoint alike.
        out[name] = out[name].map(lambda v: MISSING if pd.isna(v) else str(v)).astype("object")
    target = out[spec.target]
    if target.isna().any():
        rows = list(target[target.isna()].index[:5])
        raise DataError(
            f"{origin}: target {spec.target!r} has {int(target.isna().sum())} missing "
            f"value(s) (rows {rows}...)"
        )
    out[spec.target] = encode_target(target, spec, origin)
    # the sensitive attribute keeps its values (and type: it may be a feature too); the
    # fairness groups are computed from a copy of it (`groups`)
    return out


def groups(column: pd.Series) -> np.ndarray:
    """Fairness groups from a sensitive column of any type: each value as text, one level for
    a missing value. A copy: the column itself (perhaps a feature) is left as it is."""
    return np.array([MISSING if pd.isna(v) else str(v) for v in column], dtype=object)


SHOWN_VALUES = 5  # an error lists at most this many of a column's values


def _shown(values: list[Any]) -> str:
    if len(values) <= SHOWN_VALUES:
        return repr(values)
    return f"{len(values)} distinct values, e.g. {values[:SHOWN_VALUES]!r}"


def label_key(value: Any) -> Any:
    """What a label is compared by: its value, not its spelling. A number, or text that reads
    as one, is its float (1, 1.0, "1" and "1.0" are one label); anything else is its text."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return number if np.isfinite(number) else text


def same_label(a: Any, b: Any) -> bool:
    return label_key(a) == label_key(b)


MAX_CLASSES = 100  # more distinct labels than this is no classification target


def encode_target(target: pd.Series, spec: ModelSpec, origin: str = "dataset") -> pd.Series:
    """The target as the estimator sees it: class indexes, or floats for a regression."""
    labels = class_labels(target, spec, origin)
    if labels is None:
        return pd.to_numeric(target).astype("float64")
    index = {label_key(label): i for i, label in enumerate(labels)}
    return target.map(lambda v: index[label_key(v)]).astype("int64")


def class_labels(target: pd.Series, spec: ModelSpec, origin: str = "dataset") -> list[Any] | None:
    """The target's labels in class-index order, as the data spells them (binary: the positive
    label last; multiclass: numbers in numeric order, then text in alphabetical order), or
    None for a regression. A DataError says when the target does not fit the spec's task, and
    which task it does fit."""
    values = pd.unique(target.dropna()).tolist()
    numeric = _numeric_target(target)
    if spec.task == tasks.REGRESSION:
        if numeric is None:
            raise DataError(
                f"{origin}: target {spec.target!r} holds text ({_shown(_sorted(values))}), not "
                f"numbers: a regression needs a numeric target; {_suggest(values, None)}"
            )
        if numeric.nunique() <= 2:
            raise DataError(
                f"{origin}: target {spec.target!r} holds {numeric.nunique()} distinct value(s) "
                f"({_shown(_sorted(values))}): that is no regression target; "
                f"{_suggest(values, numeric)}"
            )
        return None
    by_key: dict[Any, Any] = {}
    for value in _sorted(values):
        by_key.setdefault(label_key(value), value)  # 1 and 1.0 are one label
    labels = [_plain(v) for v in by_key.values()]
    if spec.task == tasks.BINARY:
        fits, need = len(labels) == 2, "exactly 2 classes"
    else:  # class labels are text or whole numbers: 0.5, 1.7, ... are measurements
        whole = numeric is None or bool(np.all(np.mod(numeric.to_numpy(), 1) == 0))
        fits, need = whole and 2 <= len(labels) <= MAX_CLASSES, f"2 to {MAX_CLASSES} classes"
    if not fits:
        raise DataError(
            f"{origin}: target {spec.target!r} must have {need} for task = {spec.task!r}, "
            f"found {_shown(labels)}; {_suggest(values, numeric)}"
        )
    if spec.task == tasks.MULTICLASS:
        return labels
    positive = [v for v in labels if same_label(v, spec.positive)]
    if not positive:
        raise DataError(
            f"{origin}: positive_label {spec.positive!r} is not a value of target "
            f"{spec.target!r}, which holds {_shown(labels)}; set positive_label to one of them"
        )
    return [next(v for v in labels if not same_label(v, positive[0])), positive[0]]


def _numeric_target(target: pd.Series) -> pd.Series | None:
    """The target as floats when every value is a number (booleans are labels), else None."""
    if pd.api.types.is_bool_dtype(target):
        return None
    coerced = pd.to_numeric(target, errors="coerce")
    if coerced.isna().any() or not np.all(np.isfinite(coerced.to_numpy(dtype=float))):
        return None
    return coerced.astype("float64")


def _suggest(values: list[Any], numeric: pd.Series | None) -> str:
    """Which task a target with these values fits."""
    distinct = len({label_key(v) for v in values})
    if distinct < 2:
        return "a model needs at least 2 distinct target values"
    integral = numeric is not None and bool(np.all(np.mod(numeric.to_numpy(), 1) == 0))
    if numeric is not None and (distinct > MAX_CLASSES or not integral):
        return "it looks like a regression target: set task = 'regression'"
    if distinct == 2:
        return "it fits task = 'binary'"
    if distinct <= MAX_CLASSES:
        return "it fits task = 'multiclass'"
    return f"more than {MAX_CLASSES} classes: group them, or predict a number (task = 'regression')"


def _sorted(values: list[Any]) -> list[Any]:
    """Numbers (and text that reads as one) in numeric order, then text alphabetically."""
    return sorted(values, key=lambda v: (isinstance(label_key(v), str), label_key(v)))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def split(frame: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A deterministic, stratified train/test split (same data + spec => same rows)."""
    from sklearn.model_selection import train_test_split

    counts = frame[spec.target].value_counts()
    classified = spec.task != tasks.REGRESSION
    stratify = frame[spec.target] if classified and counts.min() >= 2 else None
    train, test = train_test_split(
        frame, test_size=spec.split.test_size, random_state=spec.split.seed, stratify=stratify
    )
    return train, test


def input_schema(frame: pd.DataFrame, spec: ModelSpec) -> dict[str, Any]:
    """Names, dtypes, ranges and categories of the features, in input order."""
    columns = []
    for feature in spec.features:
        column = frame[feature.name]
        entry: dict[str, Any] = {"name": feature.name, "type": feature.type}
        if feature.type == "numeric":
            entry.update(
                dtype="float32", min=float(np.nanmin(column)), max=float(np.nanmax(column))
            )
        else:
            values = sorted(str(v) for v in column.dropna().unique())
            entry.update(dtype="string", categories=values[:200])
        entry["nullable"] = bool(column.isna().any())
        columns.append(entry)
    positive = spec.positive if spec.task == tasks.BINARY else None
    schema = {"features": columns, "target": spec.target, "positive_label": positive}
    schema[UNSEEN_KEY] = spec.unseen_categories  # the endpoint's rule travels with the model
    return schema


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 of a canonical CSV rendering: stable across file formats and row indexes."""
    canonical = frame.reset_index(drop=True).to_csv(
        index=False, float_format="%.17g", lineterminator="\n"
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
