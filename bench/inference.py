"""Single-request scoring: Tandem's endpoint core (ONNX) vs scikit-learn's predict_proba.

Peer: the fitted scikit-learn pipeline scoring a one-row DataFrame, which is what a
pickle-serving endpoint does. Both score the same JSON-like rows from the credit holdout;
Tandem's time includes request validation. Prints p50/p99 per request and the ratio.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from deploy.inference import Model
from ml import data, train
from ml.spec import load_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REQUESTS = 2000


def _time(fn, rows) -> np.ndarray:
    for row in rows[:50]:
        fn(row)
    timings = np.empty(REQUESTS)
    for i in range(REQUESTS):
        row = rows[i % len(rows)]
        start = time.perf_counter()
        fn(row)
        timings[i] = time.perf_counter() - start
    return timings * 1e6


def main() -> None:
    spec = load_spec(EXAMPLES / "credit.toml")
    frame = data.validate(data.load_frame(spec.dataset.source), spec)
    _, test = data.split(frame, spec)
    with tempfile.TemporaryDirectory() as tmp:
        result = train.fit(spec, frame, Path(tmp) / "model", run_id="bench")
        served = Model.load(result.artifact_dir)
        pipeline = train.build_pipeline(spec)
        train_rows, _ = data.split(frame, spec)
        pipeline.fit(train_rows[spec.feature_names], train_rows[spec.target])
    rows = test[spec.feature_names].replace({np.nan: None}).to_dict("records")
    ours = _time(lambda row: served.predict([row]), rows)
    peer = _time(lambda row: pipeline.predict_proba(pd.DataFrame([row])), rows)
    print(f"single-request scoring, {spec.name} ({spec.estimator.kind}), {REQUESTS} requests")
    for name, t in (("tandem onnx core", ours), ("scikit-learn + DataFrame", peer)):
        p50, p99 = np.percentile(t, [50, 99])
        print(f"  {name:26s} p50 {p50:8.1f} µs   p99 {p99:8.1f} µs")
    ratio = np.percentile(peer, 50) / np.percentile(ours, 50)
    print(f"  ratio (peer p50 / tandem p50): {ratio:.1f}x")


if __name__ == "__main__":
    main()
