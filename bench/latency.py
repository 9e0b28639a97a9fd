"""Single-request latency, JSON text in → validation → model → JSON text out.

Two models: a 30-feature logistic pipeline (synthetic, seeded) and the credit GBM
(examples/credit.toml). For each, in the same run and on the same request bodies:

- tandem Service.handle: what every entry point calls (routing, limits, strict JSON,
  validation, ONNX, the answer), bytes in, bytes out;
- tandem core: json.loads → Model.predict_payload → json.dumps;
- scikit-learn predict_proba on one ndarray row, and on a one-row DataFrame (what a
  pickle-serving endpoint does), with the same json.loads/json.dumps around it;
- MLflow pyfunc (the sklearn flavour, predict_proba) on a one-row DataFrame, when mlflow is
  importable (the `bench` extra);
- the floor: bare onnxruntime running the served graph on feeds prebuilt once (one [1, n]
  float tensor for the numeric features, one string tensor per text column), plus
  json.loads/json.dumps of the same bodies: what scoring this model costs at the least;
- for reference on a model with text columns: the estimator alone, without the preprocessing
  its graph carries, on one prebuilt [1, n] tensor of the already one-hot encoded row (less
  work than serving the model takes, so not the budget's floor).

Each figure is the median over rounds of the mean time per call in a round; the rounds of
all contenders are interleaved, so a busy machine slows them alike. The machine's load is
printed before and after. Budget: Tandem within 2x of the floor on both models.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.serving import PREDICT_PATH
from deploy.inference import Model
from deploy.service import Service
from ml import artifact, data, train
from ml.spec import ModelSpec, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROUNDS = 25
ROUND_SECONDS = 0.05  # each contender's round lasts about this long
BODIES = 256  # distinct request bodies, used in turn
BUDGET = 2.0  # Tandem's Service.handle within this factor of the floor
FLOOR = "floor: onnxruntime + json"
HEADERS = {"content-type": "application/json"}


@dataclass
class Subject:
    """One model, fitted once, in every form the contenders serve it."""

    title: str
    spec: ModelSpec
    pipeline: Any
    train: pd.DataFrame
    test: pd.DataFrame
    model_dir: Path


def logistic_30(workdir: Path) -> Subject:
    """A 30-feature logistic regression pipeline on seeded synthetic rows."""
    rng = np.random.default_rng(30)
    names = [f"x{i:02d}" for i in range(30)]
    features = rng.normal(size=(4000, 30)) * rng.uniform(0.5, 20, size=30)
    weights = rng.normal(size=30) / features.std(axis=0)
    logits = features @ weights + rng.normal(scale=1.0, size=4000)
    frame = pd.DataFrame(features, columns=names)
    frame["label"] = (logits > 0).astype(int)
    spec = parse_spec(
        {
            "name": "logistic-30",
            "target": "label",
            "positive_label": 1,
            "features": [{"name": n, "type": "numeric"} for n in names],
            "dataset": {"source": "synthetic://bench"},
            "estimator": {"kind": "logistic_regression", "params": {"max_iter": 1000}},
        }
    )
    return _fitted("30-feature logistic pipeline", spec, frame, workdir)


def credit_gbm(workdir: Path) -> Subject:
    spec = load_spec(EXAMPLES / "credit.toml")
    return _fitted("credit GBM (examples/credit.toml)", spec, data.load_frame(spec.dataset.source),
                   workdir)  # fmt: skip


def _fitted(title: str, spec: ModelSpec, frame: pd.DataFrame, workdir: Path) -> Subject:
    frame = data.validate(frame, spec)
    train_rows, test_rows = data.split(frame, spec)
    pipeline = train.build_pipeline(spec).fit(
        train_rows[spec.feature_names], train_rows[spec.target]
    )
    model_dir = workdir / spec.name
    model_dir.mkdir(parents=True)
    (model_dir / artifact.ONNX).write_bytes(artifact.to_onnx(pipeline, spec))
    card = {
        "spec": spec.model_dump(mode="json"),
        "input_schema": data.input_schema(train_rows, spec),
        "onnx_inputs": artifact.onnx_inputs(spec),
        "task": "binary",
        "classes": pipeline.classes_.tolist(),
    }
    artifact.write_json(model_dir / artifact.CARD, card)
    artifact.write_json(model_dir / artifact.BASELINE, {})
    artifact.seal(model_dir)
    # requests the schema accepts (a holdout row may hold a category training never saw)
    accepted = test_rows
    for name in spec.categorical:
        accepted = accepted[accepted[name].isin(set(train_rows[name]))]
    return Subject(title, spec, pipeline, train_rows, accepted, model_dir)


# --- contenders -------------------------------------------------------------------------------


def contenders(subject: Subject, bodies: list[bytes]) -> dict[str, Callable[[bytes], Any]]:
    spec, pipeline = subject.spec, subject.pipeline
    names = spec.feature_names
    model = Model.load(subject.model_dir, version=1)
    service = Service(model)
    loads, dumps = json.loads, json.dumps

    def tandem_service(body: bytes) -> bytes:
        return service.handle("POST", PREDICT_PATH, HEADERS, body).body

    def tandem_core(body: bytes) -> str:
        return dumps(model.predict_payload(loads(body)))

    ndarray_pipeline = _positional_twin(subject)
    numeric_only = not spec.categorical

    def sklearn_ndarray(body: bytes) -> str:
        (row,) = loads(body)["instances"]
        values = [row[c] for c in names]
        array = np.array([values], dtype=np.float64 if numeric_only else object)
        return dumps(_answer(ndarray_pipeline.predict_proba(array), pipeline.classes_))

    def sklearn_dataframe(body: bytes) -> str:
        frame = pd.DataFrame(loads(body)["instances"], columns=names)
        frame[spec.numeric] = frame[spec.numeric].astype("float64")  # null → NaN
        return dumps(_answer(pipeline.predict_proba(frame), pipeline.classes_))

    answers = [model.predict_payload(loads(b)) for b in bodies[:BODIES]]
    answer_for = dict(zip(bodies[:BODIES], answers, strict=True))
    complete = next(r for b in bodies for r in loads(b)["instances"] if None not in r.values())
    served_feeds = model.feeds_from_columns({c: [complete[c]] for c in names})
    session, served_outputs = model.session, [model.session.get_outputs()[1].name]

    def floor(body: bytes) -> str:
        loads(body)
        session.run(served_outputs, served_feeds)
        return dumps(answer_for[body])

    found = {
        "tandem Service.handle": tandem_service,
        "tandem core": tandem_core,
        FLOOR: floor,
        "scikit-learn, ndarray row": sklearn_ndarray,
        "scikit-learn, DataFrame row": sklearn_dataframe,
    }
    if not numeric_only:  # for reference: less work than serving the model takes
        estimator_session, estimator_tensor = _estimator_alone(subject)
        probabilities = [estimator_session.get_outputs()[1].name]

        def estimator_alone(body: bytes) -> str:
            loads(body)
            estimator_session.run(probabilities, estimator_tensor)
            return dumps(answer_for[body])

        found["estimator alone + json"] = estimator_alone
    pyfunc = _mlflow_pyfunc(subject)
    if pyfunc is not None:

        def mlflow_pyfunc(body: bytes) -> str:
            frame = pd.DataFrame(loads(body)["instances"], columns=names)
            frame[spec.numeric] = frame[spec.numeric].astype("float64")
            return dumps(_answer(np.asarray(pyfunc.predict(frame)), pipeline.classes_))

        found["MLflow pyfunc, DataFrame row"] = mlflow_pyfunc
    return found


def _answer(proba: np.ndarray, classes: np.ndarray) -> dict[str, Any]:
    return {
        "predictions": classes[proba.argmax(axis=1)].tolist(),
        "probabilities": proba.tolist(),
    }


def _positional_twin(subject: Subject) -> Any:
    """The same pipeline, its columns chosen by position: it scores an ndarray row."""
    from sklearn.base import clone

    names = subject.spec.feature_names
    twin = clone(subject.pipeline)
    prepare = twin.named_steps["prepare"]
    prepare.transformers = [
        (name, step, [names.index(c) for c in columns])
        for name, step, columns in prepare.transformers
    ]
    dtype = np.float64 if not subject.spec.categorical else object
    rows = subject.train
    return twin.fit(rows[names].to_numpy(dtype=dtype), rows[subject.spec.target])


def _estimator_alone(subject: Subject) -> tuple[Any, dict[str, np.ndarray]]:
    """The estimator without its preprocessing, as a single-input graph, on the pipeline's
    preprocessed row (strings already one-hot encoded) as one prebuilt [1, n] float tensor."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    row = subject.test[subject.spec.feature_names].head(1)
    estimator = subject.pipeline.named_steps["estimator"]
    prepared = subject.pipeline.named_steps["prepare"].transform(row)
    prepared = np.asarray(prepared.todense() if hasattr(prepared, "todense") else prepared)
    tensor = prepared.astype(np.float32)
    graph = to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, tensor.shape[1]]))],
        options={id(estimator): {"zipmap": False}},
    ).SerializeToString()
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    return session, {session.get_inputs()[0].name: tensor}


def _mlflow_pyfunc(subject: Subject) -> Any:
    try:
        import mlflow.pyfunc
        import mlflow.sklearn
    except ImportError:
        return None
    import skops.io

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    path = subject.model_dir.parent / f"mlflow-{subject.spec.name}"
    example = subject.test[subject.spec.feature_names].head(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(
            subject.pipeline,
            str(path),
            input_example=example,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(subject.pipeline)),
        )
        return mlflow.pyfunc.load_model(str(path))


# --- timing -----------------------------------------------------------------------------------


def measure(functions: dict[str, Callable[[bytes], Any]], bodies: list[bytes]) -> dict[str, float]:
    """Median over ROUNDS of the mean µs per call; contenders interleaved round by round."""
    calls = {}
    for name, fn in functions.items():
        for body in bodies[:20]:  # warm up, and size a round to about ROUND_SECONDS
            fn(body)
        started = time.perf_counter()
        for body in bodies[:50]:
            fn(body)
        per_call = (time.perf_counter() - started) / 50
        calls[name] = max(20, min(5000, int(ROUND_SECONDS / per_call)))
    rounds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(ROUNDS):
        for name, fn in functions.items():
            n = calls[name]
            chosen = [bodies[i % len(bodies)] for i in range(n)]
            started = time.perf_counter()
            for body in chosen:
                fn(body)
            rounds[name].append((time.perf_counter() - started) / n * 1e6)
    return {name: statistics.median(times) for name, times in rounds.items()}


def request_bodies(subject: Subject) -> list[bytes]:
    rows = subject.test[subject.spec.feature_names].head(BODIES)
    records = rows.replace({np.nan: None}).to_dict("records")
    return [json.dumps({"instances": [r]}).encode() for r in records]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def report(subject: Subject, figures: dict[str, float]) -> bool:
    floor = figures[FLOOR]
    tandem = figures["tandem Service.handle"]
    print(f"\n{subject.title}: median µs per request (JSON text in, JSON text out)")
    for name, micros in figures.items():
        ratio = micros / tandem
        print(f"  {name:32s} {micros:9.1f} µs   {ratio:6.2f}x tandem")
    within = tandem <= BUDGET * floor
    print(
        f"  tandem / floor = {tandem / floor:.2f}x (budget {BUDGET:.0f}x): "
        f"{'within budget' if within else 'OVER BUDGET'}"
    )
    return within


def main() -> None:
    print(f"single-request latency, {ROUNDS} interleaved rounds; {load()}")
    try:
        import mlflow

        print(f"MLflow {mlflow.__version__} found: the pyfunc peer runs")
    except ImportError:
        print("MLflow is not importable: the pyfunc peer is skipped (pip install '.[bench]')")
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for build in (logistic_30, credit_gbm):
            subject = build(Path(tmp))
            bodies = request_bodies(subject)
            verdicts.append(report(subject, measure(contenders(subject, bodies), bodies)))
    print(f"\n{load()}")
    print("budget met on both models" if all(verdicts) else "budget NOT met")


if __name__ == "__main__":
    main()
