"""Estimator kinds outside scikit-learn: their extras, their parameters, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ml import tasks, train
from ml.errors import SpecError
from ml.spec import parse_spec
from tests.conftest import REPO, spec_dict

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")


@pytest.mark.parametrize("kind", sorted(tasks.EXTRAS))
@pytest.mark.parametrize("library", ["library", "onnxmltools"])
def test_a_missing_extra_is_refused_before_any_job_naming_the_install(
    kind: str, library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml import datasets

    # a None entry in sys.modules is how Python marks a module as not importable
    monkeypatch.setitem(sys.modules, kind if library == "library" else library, None)
    spec = parse_spec(spec_dict(estimator={"kind": kind, "params": {"n_estimators": 5}}))
    with pytest.raises(SpecError, match=rf"pip install 'tandem-mlops\[{kind}\]'"):
        train.check(spec, datasets.credit(rows=200, seed=3), origin="test")


@pytest.mark.parametrize("kind", sorted(tasks.EXTRAS))
def test_parameters_taken_through_kwargs_are_accepted_and_typos_refused(kind: str) -> None:
    spec = parse_spec(spec_dict(estimator={"kind": kind, "params": {"n_estimators": 7}}))
    assert train.estimator(spec).get_params()["n_estimators"] == 7
    typo = parse_spec(spec_dict(estimator={"kind": kind, "params": {"n_estimator": 7}}))
    with pytest.raises(SpecError, match=r"estimator.params: \['n_estimator'\] not accepted"):
        train.estimator(typo)


def test_lightgbm_is_quiet_unless_the_spec_says_otherwise() -> None:
    quiet = parse_spec(spec_dict(estimator={"kind": "lightgbm"}))
    assert train.estimator(quiet).get_params()["verbose"] == -1
    chatty = parse_spec(spec_dict(estimator={"kind": "lightgbm", "params": {"verbose": 1}}))
    assert train.estimator(chatty).get_params()["verbose"] == 1


def test_training_and_converting_a_scikit_learn_kind_never_imports_the_extras() -> None:
    script = (
        "import sys\n"
        "from ml import artifact, datasets, train, data\n"
        "from ml.spec import parse_spec\n"
        "from tests.conftest import spec_dict\n"
        "spec = parse_spec(spec_dict())\n"
        "frame = data.validate(datasets.credit(rows=200, seed=3), spec)\n"
        "pipeline = train.build_pipeline(spec).fit(frame[spec.feature_names], frame[spec.target])\n"
        "artifact.to_onnx(pipeline, spec)\n"
        "print(sorted(m for m in ('xgboost', 'lightgbm', 'onnxmltools') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
