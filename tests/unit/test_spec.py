"""ModelSpec: the examples load, and a bad spec names the file, the key and the expectation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.naming import MODEL_NAME_RE, is_model_name
from ml.errors import SpecError
from ml.spec import ModelSpec, load_spec, parse_spec
from tests.conftest import BASE_SPEC, EXAMPLES, spec_dict, write_spec


@pytest.mark.parametrize(
    ("filename", "name", "target", "kind"),
    [
        ("credit.toml", "credit", "default", "gradient_boosting"),
        ("breast_cancer.toml", "breast-cancer", "malignant", "logistic_regression"),
    ],
)
def test_examples_load(filename: str, name: str, target: str, kind: str) -> None:
    spec = load_spec(EXAMPLES / filename)
    assert spec.name == name
    assert spec.target == target
    assert spec.estimator.kind == kind
    assert spec.target not in spec.feature_names
    assert spec.gates.min_metrics, "an example without minimum metrics gates nothing"


def test_credit_example_declares_fairness_and_personal_data() -> None:
    spec = load_spec(EXAMPLES / "credit.toml")
    assert spec.sensitive_attribute == "gender"
    assert spec.gates.max_fairness_gap is not None
    assert spec.personal_data == ["customer_id"]
    assert spec.categorical == ["employment"]
    assert spec.columns[-2:] == ["default", "gender"]


def test_written_spec_round_trips(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path))
    assert spec == parse_spec(BASE_SPEC)
    assert spec.estimator.params == BASE_SPEC["estimator"]["params"]


def test_relative_dataset_path_resolves_against_spec_dir(tmp_path: Path) -> None:
    path = write_spec(tmp_path, dataset={"source": "data/train.csv"})
    assert load_spec(path).dataset.source == str(tmp_path / "data" / "train.csv")


def _error(tmp_path: Path, **overrides) -> str:
    path = write_spec(tmp_path, **overrides)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message, f"the error does not name the file: {message}"
    return message


def test_missing_target(tmp_path: Path) -> None:
    message = _error(tmp_path, target=None)
    assert ": target: Field required" in message


def test_unknown_estimator_kind(tmp_path: Path) -> None:
    message = _error(tmp_path, estimator={"kind": "xgboost_turbo", "params": {}})
    assert "estimator.kind" in message
    assert "logistic_regression" in message  # says what was expected


def test_fairness_gap_above_one(tmp_path: Path) -> None:
    gates = {**BASE_SPEC["gates"], "max_fairness_gap": 1.5}
    message = _error(tmp_path, gates=gates)
    assert "gates.max_fairness_gap" in message
    assert "1.5 is outside [0, 1]" in message


def test_unknown_metric_in_min_metrics(tmp_path: Path) -> None:
    gates = {**BASE_SPEC["gates"], "min_metrics": {"roc_auc": 0.7, "auprc": 0.5}}
    message = _error(tmp_path, gates=gates)
    assert "gates.min_metrics" in message
    assert "auprc" in message
    assert "roc_auc" in message  # the list of known metrics


def test_duplicate_features(tmp_path: Path) -> None:
    features = [*BASE_SPEC["features"], {"name": "income", "type": "numeric"}]
    message = _error(tmp_path, features=features)
    assert "features" in message
    assert "duplicate" in message
    assert "'income'" in message


def test_target_listed_as_feature(tmp_path: Path) -> None:
    features = [*BASE_SPEC["features"], {"name": "default", "type": "numeric"}]
    message = _error(tmp_path, features=features)
    assert "target 'default' is also listed as a feature" in message


def test_fairness_gate_without_sensitive_attribute(tmp_path: Path) -> None:
    message = _error(tmp_path, sensitive_attribute=None)
    assert "gates.max_fairness_gap needs a sensitive_attribute" in message


def test_extra_key(tmp_path: Path) -> None:
    message = _error(tmp_path, learning_rate=0.1)
    assert "learning_rate" in message
    assert "Extra inputs are not permitted" in message


def test_extra_key_in_a_table(tmp_path: Path) -> None:
    message = _error(tmp_path, split={"test_size": 0.25, "seed": 1, "shuffle": True})
    assert "split.shuffle" in message


def test_bad_feature_type_names_the_index(tmp_path: Path) -> None:
    features = [{"name": "age", "type": "numeric"}, {"name": "income", "type": "float"}]
    message = _error(tmp_path, features=features)
    assert "features.1.type" in message


def test_unseen_categories_defaults_to_error_and_reads_missing(tmp_path: Path) -> None:
    assert load_spec(write_spec(tmp_path)).unseen_categories == "error"
    assert load_spec(write_spec(tmp_path, unseen_categories="missing")).unseen_categories == (
        "missing"
    )


def test_bad_unseen_categories_names_the_key_and_the_choices(tmp_path: Path) -> None:
    message = _error(tmp_path, unseen_categories="drop")
    assert "unseen_categories" in message
    assert "'error' or 'missing'" in message


def test_every_problem_is_reported(tmp_path: Path) -> None:
    message = _error(tmp_path, target=None, estimator={"kind": "svm"})
    assert "target" in message
    assert "estimator.kind" in message


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "credit"\ntarget = \n[dataset\n')
    with pytest.raises(SpecError, match=r"broken\.toml: not valid TOML"):
        load_spec(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(SpecError, match=r"nowhere\.toml: no such spec file"):
        load_spec(path)


@pytest.mark.parametrize(
    "bad", ["Credit", "1credit", "credit-", "-credit", "credit_model", "a" * 33, "a" * 41, ""]
)
def test_bad_names_rejected(bad: str) -> None:
    assert not is_model_name(bad)
    with pytest.raises(SpecError, match="name"):
        parse_spec(spec_dict(name=bad), origin="inline.toml")


def test_bad_name_error_names_the_file_the_key_and_the_rule() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(spec_dict(name="Credit"), origin="inline.toml")
    message = str(info.value)
    assert "inline.toml: name:" in message
    assert "1-32 lowercase letters" in message


@pytest.mark.parametrize("good", ["c", "credit", "breast-cancer", "m2", "a" * 32])
def test_names_of_the_shared_rule_are_accepted(good: str) -> None:
    # one rule for every entry (contract.naming): 1-32 characters, starting with a letter
    assert parse_spec(spec_dict(name=good)).name == good


@settings(max_examples=60, deadline=None)
@given(st.from_regex(MODEL_NAME_RE.pattern, fullmatch=True))
def test_names_matching_the_pattern_are_accepted(name: str) -> None:
    assert is_model_name(name)
    assert parse_spec(spec_dict(name=name)).name == name


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abcXYZ019-_ .\n", min_size=0, max_size=45))
def test_name_validation_agrees_with_the_pattern(name: str) -> None:
    valid = MODEL_NAME_RE.fullmatch(name) is not None
    assert is_model_name(name) == valid
    if valid:
        assert parse_spec(spec_dict(name=name)).name == name
    else:
        with pytest.raises(SpecError):
            parse_spec(spec_dict(name=name))


def test_non_utf8_spec_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(
        'name = "credit"\ndescription = "Kreditmodell f\u00fcr Privatkunden"\n'.encode("latin-1")
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not UTF-8 text")
    assert "0xfc" in message  # the offending byte


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    path = write_spec(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_spec(path) == parse_spec(BASE_SPEC)


def test_directory_as_spec_names_it(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a spec file"


def test_unreadable_spec_path_names_the_file_and_the_reason(tmp_path: Path) -> None:
    # a symlink to itself: the path exists, but reading it fails (ELOOP) even as root
    path = tmp_path / "loop.toml"
    path.symlink_to(path)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read the spec file:")
    assert "symbolic links" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_spec_without_read_permission(tmp_path: Path) -> None:
    path = write_spec(tmp_path)
    path.chmod(0)
    with pytest.raises(SpecError, match="cannot read the spec file: permission denied"):
        load_spec(path)


def test_personal_column_as_a_feature_is_refused(tmp_path: Path) -> None:
    features = [*BASE_SPEC["features"], {"name": "customer_id", "type": "categorical"}]
    message = _error(tmp_path, features=features)
    assert "personal_data" in message
    assert "'customer_id'" in message
    assert "also a feature" in message
    assert "model.onnx" in message  # why: the raw values would be inside the model


def test_numeric_personal_column_as_a_feature_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, personal_data=["income"])
    assert "personal_data: column 'income' is also a feature" in message


def test_personal_column_as_the_target_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, personal_data=["customer_id", "default"])
    assert "personal_data: column 'default' is the target" in message


def test_personal_column_as_the_sensitive_attribute_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, personal_data=["gender"])
    assert "personal_data: column 'gender' is the sensitive_attribute" in message


def test_personal_column_that_is_only_read_is_fine() -> None:
    assert parse_spec(spec_dict()).personal_data == ["customer_id"]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused(tmp_path: Path, value: float) -> None:
    # TOML has nan and inf; a gate against NaN never decides and JSON cannot hold either
    gates = {**BASE_SPEC["gates"], "min_improvement": value}
    assert "gates.min_improvement: Input should be a finite number" in _error(tmp_path, gates=gates)
    estimator = {"kind": "logistic_regression", "params": {"C": value}}
    assert "estimator.params" in _error(tmp_path, estimator=estimator)


def test_spec_is_frozen() -> None:
    spec: ModelSpec = parse_spec(spec_dict())
    with pytest.raises(ValueError):
        spec.name = "other"  # type: ignore[misc]
