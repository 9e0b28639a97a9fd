"""ONNX parity matrix: every estimator kind x every task it takes (read from ml/tasks.py, so
a new kind is tested here without a new line), on numeric + categorical features with missing
values, against the fitted scikit-learn pipeline, at the one pinned opset.

Tolerances are absolute: ONNX computes in float32. Class probabilities must agree to 1e-5;
a regression's values to 1e-5 of the target's largest magnitude (float32 keeps ~7 digits).
Run with `-s` to see the measured table.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from deploy.inference import Model, columns_from_schema
from ml import artifact, data, tasks, train
from ml.spec import parse_spec
from tests.conftest import spec_dict

PROBABILITY_ATOL = 1e-5
REGRESSION_RELATIVE_ATOL = 1e-5
ROWS = 300
# small ensembles keep the file fast; a kind not named here trains with its defaults
PARAMS = {
    "random_forest": {"n_estimators": 10, "max_depth": 5},
    "gradient_boosting": {"n_estimators": 20, "max_depth": 3},
    "hist_gradient_boosting": {"max_iter": 20},
    "xgboost": {"n_estimators": 20, "max_depth": 3, "n_jobs": 1},
    "lightgbm": {"n_estimators": 20, "num_leaves": 8, "n_jobs": 1},
}
CASES = [
    (kind, task)
    for kind in tasks.ESTIMATORS
    for task in tasks.TASKS
    if tasks.side(task) in tasks.ESTIMATORS[kind]
]
# enough levels that the one-hot columns would make the prepared matrix sparse
REGIONS = ["north", "south", "east", "west", *(f"zone{i}" for i in range(8))]
MEASURED: dict[tuple[str, str], float] = {}


def frame(task: str, seed: int = 0) -> pd.DataFrame:
    """Three numerics (one with ~7% missing), one categorical of 12 levels, a target that uses
    both."""
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame(
        {
            "size": rng.normal(50, 15, ROWS),
            "rate": rng.normal(0, 1, ROWS),
            "count": rng.integers(0, 12, ROWS).astype(float),
            "region": rng.choice(REGIONS, ROWS),
        }
    )
    signal = (rows["size"] - 50) / 15 + rows["rate"] + (rows["region"] == "north") * 1.5
    rows.loc[rng.choice(ROWS, 20, replace=False), "size"] = np.nan
    noisy = signal + rng.normal(0, 0.5, ROWS)
    if task == tasks.BINARY:
        rows["target"] = (noisy > 0.5).astype(int)
    elif task == tasks.MULTICLASS:
        rows["target"] = np.digitize(noisy, [-0.5, 1.0]).astype(int)
    else:
        rows["target"] = 150 + 40 * noisy + 3 * rows["count"]
    return rows


def spec_for(kind: str, task: str):
    gates = {
        tasks.BINARY: {"primary_metric": "roc_auc", "min_metrics": {"roc_auc": 0.5}},
        tasks.MULTICLASS: {"primary_metric": "f1_macro", "min_metrics": {"f1_macro": 0.1}},
        tasks.REGRESSION: {"primary_metric": "rmse", "max_metrics": {"rmse": 1000.0}},
    }[task]
    return parse_spec(
        spec_dict(
            name="parity",
            task=task,
            target="target",
            positive_label=1 if task == tasks.BINARY else None,
            sensitive_attribute=None,
            personal_data=None,
            features=[
                {"name": "size", "type": "numeric"},
                {"name": "rate", "type": "numeric"},
                {"name": "count", "type": "numeric"},
                {"name": "region", "type": "categorical"},
            ],
            estimator={"kind": kind, "params": PARAMS.get(kind, {})},
            gates=gates,
        )
    )


@pytest.fixture(scope="module")
def table():
    yield MEASURED
    if MEASURED:
        print("\nONNX parity, max abs diff (ONNX vs scikit-learn pipeline):")
        for (kind, task), diff in sorted(MEASURED.items()):
            print(f"  {kind:24} {task:11} {diff:.2e}")


@pytest.mark.parametrize(("kind", "task"), CASES, ids=[f"{k}-{t}" for k, t in CASES])
def test_onnx_matches_the_fitted_pipeline(kind: str, task: str, tmp_path: Path, table) -> None:
    missing = [m for m in tasks.EXTRAS.get(kind, ("", ()))[1] if not importlib.util.find_spec(m)]
    if missing:
        pytest.skip(f"{kind} needs pip install 'tandem-mlops[{tasks.EXTRAS[kind][0]}]'")
    spec = spec_for(kind, task)
    rows = data.validate(frame(task), spec)
    train_rows, test_rows = data.split(rows, spec)
    pipeline = train.build_pipeline(spec).fit(
        train_rows[spec.feature_names], train_rows[spec.target]
    )
    (tmp_path / "model.onnx").write_bytes(artifact.to_onnx(pipeline, spec))
    model = Model(
        tmp_path / "model.onnx",
        columns_from_schema(data.input_schema(train_rows, spec)),
        {"task": task},
        inputs=artifact.onnx_inputs(spec),
    )

    probe = test_rows[spec.feature_names]
    assert probe["size"].isna().any(), "the probe must hold missing numbers"
    assert probe["region"].nunique() > 8, "the probe must hold many categories"
    got = model.scores(model.feeds_from_columns({c: probe[c] for c in spec.feature_names}))
    expected = train.native_output(pipeline, probe, task)
    assert got.shape == expected.shape
    diff = float(np.max(np.abs(got - expected)))
    table[(kind, task)] = diff
    tolerance = (
        REGRESSION_RELATIVE_ATOL * float(np.max(np.abs(rows["target"])))
        if task == tasks.REGRESSION
        else PROBABILITY_ATOL
    )
    assert diff <= tolerance, f"{kind}/{task}: ONNX differs by {diff:.3g} (> {tolerance:.3g})"
    assert len(np.unique(np.round(expected, 3))) > 5, "a constant model would match trivially"

    graph = onnx.load(tmp_path / "model.onnx")
    opsets = {o.domain or "": o.version for o in graph.opset_import}
    # the main opset is the pinned one; skl2onnx writes the lowest ai.onnx.ml version the
    # graph's operators need (1 for a linear model), never above the pin
    assert set(opsets) <= set(artifact.TARGET_OPSET), f"{kind}/{task}: opsets {opsets}"
    assert opsets[""] == artifact.TARGET_OPSET[""], f"{kind}/{task}: opsets {opsets}"
    assert opsets.get("ai.onnx.ml", 0) <= artifact.TARGET_OPSET["ai.onnx.ml"]
