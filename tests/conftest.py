"""Shared fixtures: small specs written as TOML, a local stack per test, one trained artifact.

Everything here is offline and small: 600 synthetic credit rows train in about a second.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ml.clouds import connect
from ml.clouds.base import Stack
from ml.clouds.local import stack_outputs

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CREDIT_SOURCE = "synthetic://credit?rows=600&seed=3"

BASE_SPEC: dict[str, Any] = {
    "name": "credit",
    "description": "small credit model for tests",
    "target": "default",
    "positive_label": 1,
    "sensitive_attribute": "gender",
    "personal_data": ["customer_id"],
    "features": [
        {"name": "age", "type": "numeric"},
        {"name": "income", "type": "numeric"},
        {"name": "debt_ratio", "type": "numeric"},
        {"name": "late_payments", "type": "numeric"},
        {"name": "credit_lines", "type": "numeric"},
        {"name": "employment", "type": "categorical"},
    ],
    "dataset": {"source": CREDIT_SOURCE},
    "estimator": {
        "kind": "gradient_boosting",
        "params": {"n_estimators": 30, "max_depth": 2, "learning_rate": 0.1},
    },
    "split": {"test_size": 0.25, "seed": 42},
    "gates": {
        "primary_metric": "roc_auc",
        "min_metrics": {"roc_auc": 0.7},
        "min_improvement": -0.01,
        "max_fairness_gap": 0.5,
    },
}


def spec_dict(**overrides: Any) -> dict[str, Any]:
    """The base spec with top-level keys replaced (a value of None removes the key)."""
    raw = copy.deepcopy(BASE_SPEC)
    for key, value in overrides.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = copy.deepcopy(value)
    return raw


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def to_toml(raw: dict[str, Any]) -> str:
    """A minimal TOML writer: scalars and arrays first, then one table per mapping."""
    scalars = [
        f"{_toml_key(k)} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)
    ]
    tables = [
        f"\n[{_toml_key(k)}]\n"
        + "\n".join(f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items())
        for k, v in raw.items()
        if isinstance(v, dict)
    ]
    return "\n".join(scalars) + "\n" + "\n".join(tables) + "\n"


def write_spec(directory: Path, filename: str = "spec.toml", **overrides: Any) -> Path:
    """Write the base credit spec, with `overrides`, as TOML into `directory`; return its path."""
    path = Path(directory) / filename
    path.write_text(to_toml(spec_dict(**overrides)), encoding="utf-8")
    return path


@pytest.fixture
def spec_writer(tmp_path: Path) -> Callable[..., Path]:
    """`spec_writer(**overrides)` writes a spec into this test's tmp_path."""

    def write(filename: str = "spec.toml", **overrides: Any) -> Path:
        return write_spec(tmp_path, filename, **overrides)

    return write


@pytest.fixture
def tandem_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "tandem-home"
    monkeypatch.setenv("TANDEM_HOME", str(home))
    monkeypatch.setenv("TANDEM_CODE_VERSION", "test-code-1")
    return home


@pytest.fixture
def make_stack(tandem_home: Path) -> Callable[[str], Stack]:
    """`make_stack(name)`: a local stack under this test's own TANDEM_HOME."""

    def make(name: str) -> Stack:
        return connect("local", stack_outputs(name, tandem_home))

    return make


@pytest.fixture
def local_stack(make_stack: Callable[[str], Stack]) -> Stack:
    return make_stack("dev")


# One valid request row for the trained artifact's model (the credit features).
CREDIT_ROW = {
    "age": 41,
    "income": 38000.5,
    "debt_ratio": 0.31,
    "late_payments": 1,
    "credit_lines": 4,
    "employment": "salaried",
}


@pytest.fixture(scope="session")
def trained_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sealed artifact trained with ml.train.fit; copy it before changing anything."""
    from ml import data, train
    from ml.spec import parse_spec

    spec = parse_spec(spec_dict())
    frame = data.load_frame(spec.dataset.source)
    out = tmp_path_factory.mktemp("trained") / "artifact"
    train.fit(spec, frame, out, run_id="session-run")
    return out


@pytest.fixture
def artifact_copy(trained_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the session artifact, free to tamper with."""
    target = tmp_path / "artifact"
    shutil.copytree(trained_artifact, target)
    return target


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory):
    """One Azurite blob service per test session (per xdist worker), stopped at the end,
    also when tests fail: its blob endpoint URL (tests/azurite.py)."""
    from tests.azurite import running

    with running(tmp_path_factory.mktemp("azurite")) as url:
        yield url
