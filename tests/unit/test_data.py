"""Datasets: validation errors that say where, content hashes, splits, schema, personal data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import data, datasets
from ml.errors import DataError
from ml.spec import ModelSpec, parse_spec
from tests.conftest import spec_dict


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return parse_spec(spec_dict())


@pytest.fixture
def raw() -> pd.DataFrame:
    return datasets.credit(rows=600, seed=3)


def test_validate_canonical_dtypes(raw: pd.DataFrame, spec: ModelSpec) -> None:
    out = data.validate(raw, spec)
    assert list(out.columns) == spec.columns
    assert all(out[c].dtype == np.float64 for c in spec.numeric)
    assert out["employment"].dtype == object
    assert set(out["default"].unique()) == {0, 1}
    assert out["default"].sum() == raw["default"].sum()


def test_positive_label_string_target(raw: pd.DataFrame) -> None:
    spec = parse_spec(spec_dict(positive_label="yes"))
    frame = raw.assign(default=raw["default"].map({1: "yes", 0: "no"}))
    out = data.validate(frame, spec)
    assert out["default"].tolist() == raw["default"].tolist()


def test_missing_columns(raw: pd.DataFrame, spec: ModelSpec) -> None:
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) \['income', 'gender'\]"):
        data.validate(raw.drop(columns=["income", "gender"]), spec, origin="train.csv")


def test_non_numeric_value_names_column_and_value(raw: pd.DataFrame, spec: ModelSpec) -> None:
    frame = raw.astype({"income": object})
    frame.loc[7, "income"] = "n/a"
    frame.loc[9, "income"] = "lots"
    with pytest.raises(DataError) as info:
        data.validate(frame, spec, origin="loans.csv")
    message = str(info.value)
    assert "loans.csv" in message
    assert "'income'" in message
    assert "'n/a'" in message
    assert "row 7" in message
    assert "1 more" in message


def test_numeric_strings_are_coerced(raw: pd.DataFrame, spec: ModelSpec) -> None:
    frame = raw.assign(age=raw["age"].map(lambda v: f"{v:.0f}"))
    out = data.validate(frame, spec)
    assert out["age"].dtype == np.float64
    assert out["age"].tolist() == raw["age"].tolist()


def test_empty_frame(raw: pd.DataFrame, spec: ModelSpec) -> None:
    with pytest.raises(DataError, match="empty"):
        data.validate(raw.iloc[0:0], spec)


def test_nan_in_target(raw: pd.DataFrame, spec: ModelSpec) -> None:
    frame = raw.astype({"default": float})
    frame.loc[[3, 11], "default"] = np.nan
    with pytest.raises(
        DataError, match=r"target 'default' has 2 missing value\(s\) \(rows \[3, 11\]"
    ):
        data.validate(frame, spec)


def test_single_class_target(raw: pd.DataFrame, spec: ModelSpec) -> None:
    with pytest.raises(DataError, match=r"exactly 2 classes for task = 'binary', found \[0\]"):
        data.validate(raw.assign(default=0), spec)


def test_positive_label_absent(raw: pd.DataFrame) -> None:
    spec = parse_spec(spec_dict(positive_label=7))
    with pytest.raises(DataError, match=r"positive_label 7 is not a value of target 'default'"):
        data.validate(raw, spec)


@pytest.mark.parametrize("positive", [1, "1", 1.0, "1.0"])
@pytest.mark.parametrize("stored", ["float", "int", "text"])
def test_labels_match_by_value_not_spelling(
    raw: pd.DataFrame, positive: object, stored: str
) -> None:
    target = {"float": raw["default"].astype(float), "int": raw["default"]}.get(
        stored, raw["default"].map({1: "1.0", 0: "0.0"})
    )
    spec = parse_spec(spec_dict(positive_label=positive))
    out = data.validate(raw.assign(default=target), spec)
    assert out["default"].tolist() == raw["default"].tolist()
    assert data.label_key(data.class_labels(target, spec)[-1]) == 1.0


def test_absent_positive_label_names_the_key_and_a_few_values(raw: pd.DataFrame) -> None:
    spec = parse_spec(spec_dict(positive_label="yes"))
    with pytest.raises(DataError) as info:
        data.validate(raw.assign(default=raw["default"].astype(float)), spec, origin="a.csv")
    assert "a.csv: positive_label 'yes' is not a value of target 'default'" in str(info.value)
    assert "[0.0, 1.0]" in str(info.value)


def test_many_target_values_are_counted_not_listed(raw: pd.DataFrame, spec: ModelSpec) -> None:
    with pytest.raises(DataError) as info:
        data.validate(raw.assign(default=np.arange(len(raw)) / 7), spec)
    message = str(info.value)
    assert "must have exactly 2 classes for task = 'binary', found 600 distinct values" in message
    assert message.endswith("it looks like a regression target: set task = 'regression'")
    assert len(message) < 300


def test_missing_category_becomes_its_own_level(raw: pd.DataFrame, spec: ModelSpec) -> None:
    frame = raw.copy()
    frame.loc[0, "employment"] = None
    out = data.validate(frame, spec)
    assert out.loc[0, "employment"] == data.MISSING
    assert out["employment"].notna().all()


def test_csv_and_parquet_round_trip_same_content_hash(
    raw: pd.DataFrame, spec: ModelSpec, tmp_path: Path
) -> None:
    raw.to_csv(tmp_path / "credit.csv", index=False)
    raw.to_parquet(tmp_path / "credit.parquet")
    from_csv = data.load_frame(str(tmp_path / "credit.csv"))
    from_parquet = data.load_frame((tmp_path / "credit.parquet").as_uri())
    hashes = {data.content_hash(data.validate(f, spec)) for f in (raw, from_csv, from_parquet)}
    assert len(hashes) == 1
    assert hashes.pop().startswith("sha256:")


def test_content_hash_ignores_index_but_not_values(raw: pd.DataFrame) -> None:
    reindexed = raw.set_axis(range(1000, 1000 + len(raw)))
    assert data.content_hash(reindexed) == data.content_hash(raw)
    changed = raw.copy()
    changed.loc[0, "debt_ratio"] += 1e-9
    assert data.content_hash(changed) != data.content_hash(raw)


def test_load_frame_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such data file"):
        data.load_frame(str(tmp_path / "absent.csv"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"bad\.parquet: cannot read as parquet"):
        data.load_frame(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataError, match="unknown built-in dataset"):
        data.load_frame("synthetic://mortgages")
    with pytest.raises(DataError, match="bad parameter"):
        data.load_frame("synthetic://credit?rows=many")
    with pytest.raises(DataError, match="needs the stack's artifact store"):
        data.load_frame("s3://bucket/key.csv")


def test_split_deterministic_and_stratified(raw: pd.DataFrame, spec: ModelSpec) -> None:
    frame = data.validate(raw, spec)
    train_a, test_a = data.split(frame, spec)
    train_b, test_b = data.split(frame.copy(), spec)
    assert train_a.index.equals(train_b.index)
    assert test_a.index.equals(test_b.index)
    assert len(test_a) == 150
    assert set(train_a.index).isdisjoint(test_a.index)
    assert len(train_a) + len(test_a) == len(frame)
    # stratified: both sides hold the overall positive rate (up to one row of rounding)
    overall = frame["default"].mean()
    assert abs(test_a["default"].mean() - overall) <= 1 / len(test_a)
    assert abs(train_a["default"].mean() - overall) <= 1 / len(train_a)
    other = parse_spec(spec_dict(split={"test_size": 0.25, "seed": 7}))
    _, test_other = data.split(frame, other)
    assert not test_other.index.equals(test_a.index)


def test_input_schema_ranges_and_categories(raw: pd.DataFrame, spec: ModelSpec) -> None:
    frame = data.validate(raw, spec)
    schema = data.input_schema(frame, spec)
    assert [c["name"] for c in schema["features"]] == spec.feature_names
    by_name = {c["name"]: c for c in schema["features"]}
    assert by_name["age"]["min"] == frame["age"].min()
    assert by_name["age"]["max"] == frame["age"].max()
    assert by_name["income"]["min"] == np.nanmin(frame["income"])
    assert by_name["income"]["nullable"] is True  # the synthetic data has missing incomes
    assert by_name["age"]["nullable"] is False
    assert by_name["employment"]["categories"] == ["salaried", "self_employed", "unemployed"]
    assert by_name["employment"]["type"] == "categorical"
    assert "pseudonymised" not in by_name["employment"]
    assert schema["target"] == "default"


def test_validate_drops_personal_columns(raw: pd.DataFrame, spec: ModelSpec) -> None:
    # customer_id is personal data: read with the file, never carried on
    assert "customer_id" in raw.columns
    out = data.validate(raw, spec)
    assert "customer_id" not in out.columns
    schema = json.dumps(data.input_schema(out, spec))
    assert "customer_id" not in schema
    for raw_id in raw["customer_id"].head(50):
        assert raw_id not in schema


def test_no_unkeyed_pseudonym_is_left() -> None:
    # an unsalted sha256 of an ID is reversible by enumerating IDs; contract.privacy is keyed
    assert not hasattr(data, "pseudonym")


def test_non_numeric_value_of_a_personal_column_is_not_echoed(
    raw: pd.DataFrame, spec: ModelSpec
) -> None:
    # The spec refuses a personal feature; should one get through anyway (a spec built
    # without validation), the error still names the column and row but not the value.
    unchecked = spec.model_copy(update={"personal_data": ["customer_id", "income"]})
    frame = raw.astype({"income": object})
    frame.loc[7, "income"] = "IBAN DE02 1203 0000 0000 2020 51"
    with pytest.raises(DataError) as info:
        data.validate(frame, unchecked, origin="loans.csv")
    message = str(info.value)
    assert "'income'" in message and "row 7" in message
    assert "IBAN" not in message


@pytest.mark.parametrize("feature", ["income", "employment"])
def test_entirely_missing_feature_is_refused(
    raw: pd.DataFrame, spec: ModelSpec, feature: str
) -> None:
    frame = raw.assign(**{feature: np.nan})
    with pytest.raises(DataError) as info:
        data.validate(frame, spec, origin="loans.csv")
    message = str(info.value)
    assert message.startswith(f"loans.csv: feature {feature!r} has no values")
    assert "every row is missing" in message


def test_entirely_missing_numeric_strings_are_refused(raw: pd.DataFrame, spec: ModelSpec) -> None:
    frame = raw.assign(age="")  # a CSV column of empty strings coerces to all-NaN
    frame["age"] = frame["age"].replace("", None)
    with pytest.raises(DataError, match="feature 'age' has no values"):
        data.validate(frame, spec)


def test_infinite_numeric_value_is_refused(raw: pd.DataFrame, spec: ModelSpec) -> None:
    frame = raw.copy()
    frame.loc[[4, 9], "debt_ratio"] = np.inf
    with pytest.raises(
        DataError, match=r"column 'debt_ratio' holds 2 infinite value\(s\) \(first at row 4\)"
    ):
        data.validate(frame, spec)


def test_synthetic_shift_moves_income_down_and_defaults_up() -> None:
    base = datasets.credit(rows=3000, seed=5, shift=0.0)
    shifted = datasets.credit(rows=3000, seed=5, shift=1.0)
    ratio = shifted["income"].median() / base["income"].median()
    assert ratio == pytest.approx(np.exp(-0.35), rel=0.05)
    assert shifted["debt_ratio"].mean() > base["debt_ratio"].mean() + 0.05
    assert shifted["default"].mean() > base["default"].mean() + 0.1


def test_synthetic_is_seeded() -> None:
    pd.testing.assert_frame_equal(
        datasets.credit(rows=200, seed=9), datasets.credit(rows=200, seed=9)
    )
    assert not datasets.credit(rows=200, seed=9).equals(datasets.credit(rows=200, seed=10))


@pytest.mark.parametrize(("rows", "shift"), [(5, 0.0), (100, 1.5), (100, -0.1)])
def test_synthetic_rejects_bad_knobs(rows: int, shift: float) -> None:
    with pytest.raises(DataError, match="synthetic://credit"):
        datasets.credit(rows=rows, shift=shift)


def test_breast_cancer_builtin() -> None:
    frame = data.load_frame("sklearn://breast_cancer")
    assert len(frame) == 569
    assert frame["malignant"].sum() == 212
    assert "mean_radius" in frame.columns
