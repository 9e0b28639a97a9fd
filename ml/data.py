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

    Numeric features become float64, categorical ones str (missing stays missing), the
    target becomes 0/1 with 1 = spec.positive_label.
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
    labels = class_labels(target, spec, origin)
    out[spec.target] = target.map(lambda v: same_label(v, labels[-1])).astype("int64")
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


def class_labels(target: pd.Series, spec: ModelSpec, origin: str = "dataset") -> list[Any]:
    """The target's labels in class-index order (the positive label last), as the data spells
    them; a DataError names the spec key when the positive label is not among them."""
    values = sorted(pd.unique(target.dropna()).tolist(), key=lambda v: (str(type(v)), v))
    keys = [label_key(v) for v in values]
    if len(set(keys)) != 2:
        raise DataError(
            f"{origin}: target {spec.target!r} must have exactly 2 classes, found {_shown(values)}"
        )
    positive = [v for v, k in zip(values, keys, strict=True) if k == label_key(spec.positive_label)]
    if not positive:
        raise DataError(
            f"{origin}: positive_label {spec.positive_label!r} is not a value of target "
            f"{spec.target!r}, which holds {_shown(values)}; set positive_label to one of them"
        )
    negative = [v for v in values if not same_label(v, positive[0])]
    return [_plain(negative[0]), _plain(positive[0])]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def split(frame: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A deterministic, stratified train/test split (same data + spec => same rows)."""
    from sklearn.model_selection import train_test_split

    counts = frame[spec.target].value_counts()
    stratify = frame[spec.target] if counts.min() >= 2 else None
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
    schema = {"features": columns, "target": spec.target, "positive_label": spec.positive_label}
    schema[UNSEEN_KEY] = spec.unseen_categories  # the endpoint's rule travels with the model
    return schema


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 of a canonical CSV rendering: stable across file formats and row indexes."""
    canonical = frame.reset_index(drop=True).to_csv(
        index=False, float_format="%.17g", lineterminator="\n"
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
