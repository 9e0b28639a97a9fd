"""Drift: PSI is near zero for the training distribution and large for a shifted one."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml import data, datasets, drift
from ml.spec import ModelSpec, parse_spec
from tests.conftest import spec_dict

STABLE = 0.1  # the usual PSI reading: < 0.1 stable, > 0.25 a significant shift


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return parse_spec(spec_dict())


@pytest.fixture(scope="module")
def reference(spec: ModelSpec) -> dict:
    return drift.baseline(data.validate(datasets.credit(rows=2000, seed=1), spec), spec)


@pytest.fixture(scope="module")
def same(spec: ModelSpec) -> pd.DataFrame:
    return data.validate(datasets.credit(rows=2000, seed=2, shift=0.0), spec)


@pytest.fixture(scope="module")
def shifted(spec: ModelSpec) -> pd.DataFrame:
    return data.validate(datasets.credit(rows=2000, seed=2, shift=1.0), spec)


def test_psi_of_identical_shares_is_zero() -> None:
    assert drift.psi([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0, abs=1e-12)
    assert drift.psi([1, 2, 3], [100, 200, 300]) == pytest.approx(
        0.0, abs=1e-12
    )  # shares, not counts


def test_psi_matches_the_formula() -> None:
    e, a = np.array([0.5, 0.5]), np.array([0.8, 0.2])
    expected = float(np.sum((a - e) * np.log(a / e)))
    assert drift.psi(e, a) == pytest.approx(expected, rel=1e-4)
    assert drift.psi(e, a) == pytest.approx(drift.psi(a, e), rel=1e-4)  # symmetric


def test_psi_stays_finite_with_an_empty_bin() -> None:
    value = drift.psi([50, 50, 0], [0, 50, 50])
    assert np.isfinite(value) and value > 5


@pytest.mark.parametrize("feature", ["age", "income", "debt_ratio", "late_payments", "employment"])
def test_same_distribution_is_stable(reference: dict, same: pd.DataFrame, feature: str) -> None:
    assert drift.feature_psi(reference["features"][feature], same[feature]) < STABLE


def test_shifted_income_drifts(reference: dict, same: pd.DataFrame, shifted: pd.DataFrame) -> None:
    stable = drift.feature_psi(reference["features"]["income"], same["income"])
    moved = drift.feature_psi(reference["features"]["income"], shifted["income"])
    assert moved > 0.25
    assert moved > 10 * stable


def test_shifted_debt_ratio_drifts_but_age_does_not(reference: dict, shifted: pd.DataFrame) -> None:
    assert drift.feature_psi(reference["features"]["debt_ratio"], shifted["debt_ratio"]) > 0.25
    assert drift.feature_psi(reference["features"]["age"], shifted["age"]) < STABLE  # not shifted


def test_categorical_psi(reference: dict, same: pd.DataFrame, shifted: pd.DataFrame) -> None:
    entry = reference["features"]["employment"]
    assert drift.feature_psi(entry, same["employment"]) < 0.01
    assert drift.feature_psi(entry, shifted["employment"]) > 0.1
    # everyone unemployed: a massive shift
    everyone = pd.Series(["unemployed"] * 500, dtype=object)
    assert drift.feature_psi(entry, everyone) > 1.0


def test_categorical_psi_counts_unseen_categories(reference: dict) -> None:
    entry = reference["features"]["employment"]
    unseen = pd.Series(["retired"] * 300 + ["salaried"] * 700, dtype=object)
    assert drift.feature_psi(entry, unseen) > 0.5


def test_out_of_range_values_land_in_the_outer_bins(reference: dict) -> None:
    entry = reference["features"]["income"]
    low = pd.Series([1.0] * 1000)
    assert drift.feature_psi(entry, low) > 1.0


def test_baseline_never_holds_a_personal_column(spec: ModelSpec, reference: dict) -> None:
    assert spec.personal_data == ["customer_id"]
    assert set(reference["features"]) == set(spec.feature_names)
    rendered = json.dumps(reference)
    assert "customer_id" not in rendered
    raw_ids = datasets.credit(rows=2000, seed=1)["customer_id"]
    assert not any(raw_id in rendered for raw_id in raw_ids.head(200))


def test_missing_rate_is_recorded(spec: ModelSpec) -> None:
    frame = data.validate(datasets.credit(rows=400, seed=4), spec)
    frame.loc[frame.index[:40], "employment"] = data.MISSING
    frame.loc[frame.index[:100], "age"] = np.nan
    base = drift.baseline(frame, spec)
    assert base["features"]["employment"]["missing_rate"] == pytest.approx(0.1)
    assert base["features"]["age"]["missing_rate"] == pytest.approx(0.25)
    assert sum(base["features"]["age"]["counts"]) == 300
