"""The artifact: ONNX parity with scikit-learn, reproducible packing, tamper detection."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from deploy.inference import IntegrityError, Model, columns_from_schema
from ml import artifact, data, datasets, train
from ml.errors import ArtifactIntegrityError, DataError
from ml.spec import load_spec, parse_spec
from tests.conftest import EXAMPLES, spec_dict

PARAMS = {
    "logistic_regression": {"C": 0.5, "max_iter": 500},
    "gradient_boosting": {"n_estimators": 25, "max_depth": 3},
    "random_forest": {"n_estimators": 15, "max_depth": 6},
}


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_onnx_matches_scikit_learn(kind: str, tmp_path: Path) -> None:
    spec = parse_spec(spec_dict(estimator={"kind": kind, "params": PARAMS[kind]}))
    frame = data.validate(datasets.credit(rows=600, seed=3), spec)
    train_rows, test_rows = data.split(frame, spec)
    pipeline = train.build_pipeline(spec)
    pipeline.fit(train_rows[spec.feature_names], train_rows[spec.target])
    (tmp_path / "model.onnx").write_bytes(artifact.to_onnx(pipeline, spec))
    model = Model(tmp_path / "model.onnx", columns_from_schema(data.input_schema(train_rows, spec)))

    # holdout rows, plus rows with a missing number and an unseen/missing category
    probe = test_rows[spec.feature_names].copy()
    probe.iloc[0, probe.columns.get_loc("income")] = np.nan
    probe.iloc[1, probe.columns.get_loc("employment")] = "retired"
    probe.iloc[2, probe.columns.get_loc("employment")] = data.MISSING
    expected = pipeline.predict_proba(probe)[:, 1]
    got = model.predict_proba(model.feeds_from_columns({c: probe[c] for c in spec.feature_names}))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert len(np.unique(np.round(got, 3))) > 10, "a constant model would match trivially"
    import onnx

    graph = onnx.load(tmp_path / "model.onnx")
    opsets = {o.domain or "": o.version for o in graph.opset_import}
    assert opsets[""] == artifact.TARGET_OPSET[""]  # one pinned opset for every estimator
    assert opsets.get("ai.onnx.ml", artifact.TARGET_OPSET["ai.onnx.ml"]) <= 3


def test_logistic_regression_on_breast_cancer_matches() -> None:
    import onnxruntime as ort

    spec = load_spec(EXAMPLES / "breast_cancer.toml")
    frame = data.validate(data.load_frame(spec.dataset.source), spec)
    train_rows, test_rows = data.split(frame, spec)
    pipeline = train.build_pipeline(spec).fit(
        train_rows[spec.feature_names], train_rows[spec.target]
    )
    session = ort.InferenceSession(
        artifact.to_onnx(pipeline, spec), providers=["CPUExecutionProvider"]
    )
    feeds = {"numeric": test_rows[spec.numeric].to_numpy(np.float32)}  # one [N, 30] input
    got = session.run(None, feeds)[1][:, 1]
    np.testing.assert_allclose(
        got, pipeline.predict_proba(test_rows[spec.feature_names])[:, 1], atol=1e-5
    )


def test_onnx_metadata_says_what_the_model_needs(trained_artifact: Path) -> None:
    import onnx

    card = json.loads((trained_artifact / artifact.CARD).read_text())
    graph = onnx.load(trained_artifact / artifact.ONNX)
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props["tandem.labels"]) == {"0": 0, "1": 1}
    assert props["tandem.missing_token"] == data.MISSING
    assert json.loads(props["tandem.input_schema"]) == card["input_schema"]
    assert json.loads(props["tandem.onnx_inputs"]) == card["onnx_inputs"]
    assert json.loads(props["tandem.input_names"]) == card["input_names"]
    assert props["tandem.task"] == card["task"] == "binary"
    assert props["tandem.run_id"] == "session-run"
    assert props["tandem.tandem_version"] == artifact.tandem_version()
    assert "registry" in props["tandem.model_version"]


def test_onnx_metadata_labels_are_the_specs(tmp_path: Path) -> None:
    import onnx

    spec = parse_spec(spec_dict(positive_label="bad"))
    raw = datasets.credit(rows=600, seed=3)
    frame = raw.assign(default=raw["default"].map({1: "bad", 0: "good"}))
    train.fit(spec, frame, tmp_path / "a", run_id="r1")
    props = {p.key: p.value for p in onnx.load(tmp_path / "a" / artifact.ONNX).metadata_props}
    assert json.loads(props["tandem.labels"]) == {"0": "good", "1": "bad"}


def test_build_pipeline_applies_overrides_and_seed() -> None:
    spec = parse_spec(spec_dict())
    estimator = train.build_pipeline(spec, {"n_estimators": 7}).named_steps["estimator"]
    assert estimator.n_estimators == 7
    assert estimator.max_depth == 2  # from the spec
    assert estimator.random_state == spec.split.seed
    lr = parse_spec(spec_dict(estimator={"kind": "logistic_regression", "params": {"C": 0.1}}))
    pipeline = train.build_pipeline(lr)
    assert pipeline.named_steps["estimator"].C == 0.1
    numeric = pipeline.named_steps["prepare"].transformers[0][1]
    assert [name for name, _ in numeric.steps] == ["impute", "scale"]


def test_artifact_directory_is_sealed(trained_artifact: Path) -> None:
    names = sorted(p.name for p in trained_artifact.iterdir())
    assert names == sorted([*artifact.CONTENT, artifact.MANIFEST, artifact.TARBALL])
    listing = artifact.verify(trained_artifact)
    assert set(listing) == set(artifact.CONTENT)
    loaded = artifact.load(trained_artifact)
    assert loaded.card["run_id"] == "session-run"
    assert loaded.baseline["rows"] == loaded.card["data"]["train_rows"]


def test_tarball_is_byte_reproducible(artifact_copy: Path, tmp_path: Path) -> None:
    first = (artifact_copy / artifact.TARBALL).read_bytes()
    assert artifact.pack(artifact_copy).read_bytes() == first
    # a fresh copy (new mtimes, new directory name) packs to the very same bytes
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in (*artifact.CONTENT, artifact.MANIFEST):
        shutil.copy(artifact_copy / name, elsewhere / name)
    assert artifact.pack(elsewhere).read_bytes() == first
    with tarfile.open(artifact_copy / artifact.TARBALL) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted([*artifact.CONTENT, artifact.MANIFEST])
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)


def test_tarball_changes_with_content(artifact_copy: Path) -> None:
    before = (artifact_copy / artifact.TARBALL).read_bytes()
    card = json.loads((artifact_copy / artifact.CARD).read_text())
    card["run_id"] = "another-run"
    artifact.write_json(artifact_copy / artifact.CARD, card)
    assert artifact.seal(artifact_copy).read_bytes() != before


@pytest.mark.parametrize("name", [artifact.ONNX, artifact.CARD, artifact.BASELINE])
def test_tampering_any_file_is_detected(artifact_copy: Path, name: str) -> None:
    artifact.load(artifact_copy)  # intact first
    path = artifact_copy / name
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01  # one bit
    path.write_bytes(bytes(content))
    with pytest.raises(ArtifactIntegrityError, match=rf"{name}: sha256 differs"):
        artifact.load(artifact_copy)


@pytest.mark.parametrize("name", [artifact.ONNX, artifact.CARD, artifact.BASELINE])
def test_a_deleted_file_is_detected(artifact_copy: Path, name: str) -> None:
    (artifact_copy / name).unlink()
    with pytest.raises(
        ArtifactIntegrityError, match=rf"{name}: listed in the manifest but missing"
    ):
        artifact.load(artifact_copy)


def test_missing_or_malformed_manifest(artifact_copy: Path) -> None:
    manifest = artifact_copy / artifact.MANIFEST
    manifest.write_text("{not json")
    with pytest.raises(ArtifactIntegrityError, match="malformed manifest"):
        artifact.verify(artifact_copy)
    manifest.unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing manifest"):
        artifact.load(artifact_copy)


def test_unpack_verifies(trained_artifact: Path, tmp_path: Path) -> None:
    out = artifact.unpack(trained_artifact / artifact.TARBALL, tmp_path / "unpacked")
    for name in artifact.CONTENT:
        assert (out / name).read_bytes() == (trained_artifact / name).read_bytes()
    assert artifact.load(out).card["run_id"] == "session-run"


def test_unpack_of_a_tampered_tarball_raises(trained_artifact: Path, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with (
        tarfile.open(trained_artifact / artifact.TARBALL) as source,
        tarfile.open(fileobj=buffer, mode="w") as tampered,
    ):
        for member in source.getmembers():
            payload = source.extractfile(member).read()
            if member.name == artifact.BASELINE:
                payload = payload.replace(b'"rows"', b'"rowz"')
            member.size = len(payload)
            tampered.addfile(member, io.BytesIO(payload))
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(gzip.compress(buffer.getvalue()))
    with pytest.raises(ArtifactIntegrityError, match=r"baseline\.json"):
        artifact.unpack(bad, tmp_path / "out")


def test_model_card_has_every_required_field(trained_artifact: Path) -> None:
    card = json.loads((trained_artifact / artifact.CARD).read_text())
    required = {
        "spec",
        "params",
        "metrics",
        "evaluation",
        "data",
        "code_version",
        "input_schema",
        "feature_importances",
        "created_at",
        "run_id",
        "environment",
    }
    assert required <= set(card)
    assert card["spec"]["name"] == "credit"
    assert card["params"]["n_estimators"] == 30 and card["params"]["random_state"] == 42
    assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(card["metrics"])
    assert card["metrics"]["roc_auc"] > 0.7
    fairness = card["evaluation"]["fairness"]
    assert fairness["attribute"] == "gender"
    assert set(fairness["groups"]) == {"female", "male"}
    assert (
        card["metrics"]["equal_opportunity_difference"] == fairness["equal_opportunity_difference"]
    )
    assert card["data"]["hash"].startswith("sha256:") and len(card["data"]["hash"]) == 71
    assert card["data"]["rows"] == 600 and card["data"]["test_rows"] == 150
    assert card["code_version"]
    assert [f["name"] for f in card["input_schema"]["features"]] == [
        f["name"] for f in card["spec"]["features"]
    ]
    importances = card["feature_importances"]
    assert {i["feature"] for i in importances} == {f["name"] for f in card["spec"]["features"]}
    assert [i["mean"] for i in importances] == sorted(
        (i["mean"] for i in importances), reverse=True
    )
    assert card["created_at"].endswith("+00:00")
    assert card["onnx_parity_max_abs_diff"] < 1e-5
    assert card["evaluation"]["latency_ms"]["p99"] > 0


def test_model_card_has_no_personal_data(trained_artifact: Path) -> None:
    text = "".join(
        (trained_artifact / name).read_text() for name in (artifact.CARD, artifact.BASELINE)
    )
    assert "C003000" not in text  # synthetic customer ids start with C<seed>
    assert b"C003000" not in (trained_artifact / artifact.ONNX).read_bytes()
    card = json.loads((trained_artifact / artifact.CARD).read_text())
    assert card["spec"]["personal_data"] == ["customer_id"]  # the name, as declared
    described = [f["name"] for f in card["input_schema"]["features"]]
    baseline = json.loads((trained_artifact / artifact.BASELINE).read_text())
    assert "customer_id" not in described and "customer_id" not in baseline["features"]


def _strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("name", [artifact.CARD, artifact.BASELINE, "MANIFEST.json"])
def test_artifact_json_is_strict(trained_artifact: Path, name: str) -> None:
    _strict((trained_artifact / name).read_text())


def test_write_json_writes_non_finite_numbers_as_null(tmp_path: Path) -> None:
    payload = {
        "nan": float("nan"),
        "inf": [float("inf"), -float("inf")],
        "numpy": {"nan": np.float32("nan"), "ok": np.float64(1.5), "n": np.int64(3)},
        "nested": ({"x": float("nan")},),
        "path": tmp_path,
    }
    artifact.write_json(tmp_path / "out.json", payload)
    loaded = _strict((tmp_path / "out.json").read_text())
    assert loaded == {
        "nan": None,
        "inf": [None, None],
        "numpy": {"nan": None, "ok": 1.5, "n": 3},
        "nested": [{"x": None}],
        "path": str(tmp_path),
    }


def test_model_card_records_how_latency_was_measured(trained_artifact: Path) -> None:
    evaluation = json.loads((trained_artifact / artifact.CARD).read_text())["evaluation"]
    method = evaluation["latency_method"]
    assert "cpu time" in method["clock"]
    assert method["rounds"] >= 3 and method["samples_per_round"] > 0
    assert len(method["round_p99_ms"]) == method["rounds"]
    assert evaluation["latency_ms"]["p99"] == pytest.approx(min(method["round_p99_ms"]), abs=1e-5)


def test_a_feature_with_no_values_is_refused_before_training(tmp_path: Path) -> None:
    spec = parse_spec(spec_dict())
    frame = datasets.credit(rows=200, seed=3).assign(income=np.nan)
    with pytest.raises(DataError, match="feature 'income' has no values"):
        train.fit(spec, frame, tmp_path / "out", run_id="r", data_uri="loans.csv")
    assert not (tmp_path / "out" / artifact.CARD).exists()


def test_non_finite_estimator_params_are_recorded_as_text(tmp_path: Path) -> None:
    spec = load_spec(EXAMPLES / "breast_cancer.toml")
    frame = data.load_frame(spec.dataset.source)
    result = train.fit(spec, frame, tmp_path / "out", run_id="r", overrides={"C": float("inf")})
    card = _strict((tmp_path / "out" / artifact.CARD).read_text())
    assert card["params"]["C"] == "inf"
    assert result.card["params"]["C"] == "inf"


def test_baseline_has_reference_statistics(trained_artifact: Path) -> None:
    baseline = json.loads((trained_artifact / artifact.BASELINE).read_text())
    assert baseline["rows"] == 450
    assert set(baseline["features"]) == {
        "age",
        "income",
        "debt_ratio",
        "late_payments",
        "credit_lines",
        "employment",
    }
    income = baseline["features"]["income"]
    assert income["type"] == "numeric"
    assert income["edges"] == sorted(income["edges"]) and len(income["edges"]) == 11
    assert len(income["counts"]) == len(income["edges"]) - 1
    assert sum(income["counts"]) == round(450 * (1 - income["missing_rate"]))
    assert 0 < income["missing_rate"] < 0.05
    employment = baseline["features"]["employment"]
    assert employment["type"] == "categorical"
    assert set(employment["frequencies"]) == {"salaried", "self_employed", "unemployed"}
    assert sum(employment["frequencies"].values()) == pytest.approx(1.0)
    assert employment["missing_rate"] == 0.0


def test_endpoint_model_loads_with_verification(artifact_copy: Path) -> None:
    model = Model.load(artifact_copy)
    assert model.card["run_id"] == "session-run"
    (artifact_copy / artifact.ONNX).write_bytes(b"not a model")
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        Model.load(artifact_copy)


def test_unpack_extracts_only_the_artifact_files(trained_artifact: Path, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with (
        tarfile.open(trained_artifact / artifact.TARBALL) as source,
        tarfile.open(fileobj=buffer, mode="w") as extended,
    ):
        for member in source.getmembers():
            extended.addfile(member, source.extractfile(member))
        extra = b"print('not part of the model')\n"
        info = tarfile.TarInfo("hooks/run.py")
        info.size = len(extra)
        extended.addfile(info, io.BytesIO(extra))
        link = tarfile.TarInfo("card-link.json")
        link.type, link.linkname = tarfile.SYMTYPE, artifact.CARD
        extended.addfile(link)
    tarball = tmp_path / "extended.tar.gz"
    tarball.write_bytes(gzip.compress(buffer.getvalue()))
    out = artifact.unpack(tarball, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == sorted([*artifact.CONTENT, artifact.MANIFEST])
