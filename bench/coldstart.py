"""Cold start: a fresh process, from spawn to its first prediction, on the credit GBM.

Contenders, each a new Python process per round, the same interpreter and `python -S`
(no site-packages scan; the packages come through PYTHONPATH, as in a Lambda task root):

- tandem Lambda handler: from the Lambda archive's code built for this interpreter (with its
  compiled modules, as `tandem bundle` ships them) extracted into a task root, import
  `deploy.aws_lambda.handler` (which loads and verifies the artifact from MODEL_URI at
  import, as in Lambda's init phase), then answer one Function URL /predict event;
- floor, imports: `import numpy, onnxruntime` and nothing else;
- floor, physical: those imports + an InferenceSession of the same model.onnx + one run on
  a prebuilt feed: the least any ONNX endpoint can do;
- scikit-learn + joblib: `joblib.load` of the fitted pipeline + `predict_proba` on a one-row
  DataFrame (what a pickle-serving Lambda does);
- MLflow pyfunc: `mlflow.pyfunc.load_model` + `predict` on a one-row DataFrame, in the
  interpreter named by BENCH_MLFLOW_PYTHON (or this one, if mlflow imports here); skipped
  with a note when neither has MLflow.

Each process ends with os._exit once it has answered, so interpreter teardown is not timed.
Rounds are interleaved (one of each contender per round, after one warm-up round), and the
figure is the median. Budget: the handler within 15% of the physical floor.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy
import onnxruntime

from deploy import bundle

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 9
BUDGET = 1.15  # the handler within this factor of the physical floor

_EVENT_SCRIPT = """
import json, os, sys
from deploy.aws_lambda.handler import handler
answer = handler(json.loads(sys.argv[1]), None)
assert answer["statusCode"] == 200, answer
os._exit(0)
"""
_IMPORTS_SCRIPT = """
import os
import numpy, onnxruntime
os._exit(0)
"""
_PHYSICAL_SCRIPT = """
import json, os, sys
import numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1] + "/model.onnx", options,
                               providers=["CPUExecutionProvider"])
row = json.loads(sys.argv[2])
feeds = {}
for spec in json.loads(sys.argv[3]):
    if spec["dtype"] == "string":
        feeds[spec["name"]] = np.array([[row[spec["columns"][0]]]], dtype=object)
    else:
        feeds[spec["name"]] = np.array([[row[c] for c in spec["columns"]]], dtype=np.float32)
session.run(None, feeds)
os._exit(0)
"""
_SKLEARN_SCRIPT = """
import json, os, sys
import joblib, pandas as pd
model = joblib.load(sys.argv[1])
model.predict_proba(pd.DataFrame([json.loads(sys.argv[2])]))
os._exit(0)
"""
_MLFLOW_SCRIPT = """
import json, logging, os, sys, warnings
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
model.predict(pd.DataFrame([json.loads(sys.argv[2])]))
os._exit(0)
"""
_MLFLOW_SAVE_SCRIPT = """
import logging, sys, warnings
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)
import joblib, mlflow.sklearn, pandas as pd, skops.io, json
pipeline = joblib.load(sys.argv[1])
example = pd.DataFrame([json.loads(sys.argv[3])])
mlflow.sklearn.save_model(
    pipeline, sys.argv[2], input_example=example, pyfunc_predict_fn="predict_proba",
    skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)),
)
"""


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def mlflow_python() -> str | None:
    """The interpreter that has MLflow: BENCH_MLFLOW_PYTHON, else this one if it imports."""
    named = os.environ.get("BENCH_MLFLOW_PYTHON", "").strip()
    if named and Path(named).is_file():
        return named
    return sys.executable if importlib.util.find_spec("mlflow") else None


def _site_path() -> str:
    """Where this environment's packages are (numpy's, onnxruntime's, scikit-learn's)."""
    return os.pathsep.join(sorted({str(Path(m.__file__).parents[1]) for m in (numpy, onnxruntime)}))


def _task_root(workdir: Path) -> Path:
    """The handler as Lambda runs it: the code of the Lambda archive, built for this
    interpreter (so with its compiled modules), extracted into a task root."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    archive = bundle.build_lambda_zip(workdir / "lambda", dependencies=False, python=here)
    task = workdir / "task"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(task)
    return task


def _spawn(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed:\n{done.stderr[-2000:]}")
    return elapsed


def contenders(workdir: Path) -> tuple[dict[str, tuple[list[str], dict[str, str]]], str]:
    """The command and environment of each contender, over one fitted credit GBM."""
    import joblib

    from bench.latency import credit_gbm

    subject = credit_gbm(workdir)
    row = subject.test[subject.spec.feature_names].head(1).to_dict("records")[0]
    row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    card = json.loads((subject.model_dir / "model_card.json").read_text())
    pickle = workdir / "pipeline.joblib"
    joblib.dump(subject.pipeline, pickle)
    event = {
        "version": "2.0",
        "rawPath": "/predict",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/predict"}, "stage": "$default"},
        "body": json.dumps({"instances": [row]}),
        "isBase64Encoded": False,
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MODEL_"))}
    base |= {"PYTHONPATH": _site_path(), "PYTHONDONTWRITEBYTECODE": "1"}
    task = _task_root(workdir)
    py = [sys.executable, "-S", "-c"]
    found = {
        "tandem Lambda handler": (
            [*py, _EVENT_SCRIPT, json.dumps(event)],
            {
                **base,
                "PYTHONPATH": os.pathsep.join([str(task), _site_path()]),
                "MODEL_URI": str(subject.model_dir),
                "MODEL_VERSION": "1",
            },
        ),
        "floor: import numpy, onnxruntime": ([*py, _IMPORTS_SCRIPT], base),
        "floor: + session + one run": (
            [
                *py,
                _PHYSICAL_SCRIPT,
                str(subject.model_dir),
                json.dumps(row),
                json.dumps(card["onnx_inputs"]),
            ],
            base,
        ),
        "scikit-learn + joblib": ([*py, _SKLEARN_SCRIPT, str(pickle), json.dumps(row)], base),
    }
    note = (
        "MLflow: no interpreter with mlflow (set BENCH_MLFLOW_PYTHON); the pyfunc peer is skipped"
    )
    other = mlflow_python()
    if other is not None:
        saved = workdir / "mlflow-model"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        subprocess.run([other, "-c", _MLFLOW_SAVE_SCRIPT, str(pickle), str(saved),
                        json.dumps(row)], env=env, check=True, capture_output=True)  # fmt: skip
        found["MLflow pyfunc"] = ([other, "-c", _MLFLOW_SCRIPT, str(saved), json.dumps(row)], env)
        note = f"MLflow pyfunc runs in {other} (with its site-packages)"
    return found, note


def measure(
    found: dict[str, tuple[list[str], dict[str, str]]], rounds: int, cwd: Path
) -> dict[str, Any]:
    """Median seconds per contender over `rounds`, interleaved, after one warm-up round; each
    process starts in `cwd` (not this repository, whose sources would shadow the archive's)."""
    times: dict[str, list[float]] = {name: [] for name in found}
    for round_ in range(rounds + 1):
        for name, (argv, env) in found.items():
            elapsed = _spawn(argv, env, cwd)
            if round_:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def report(figures: dict[str, float]) -> bool:
    tandem = figures["tandem Lambda handler"]
    physical = figures["floor: + session + one run"]
    imports = figures["floor: import numpy, onnxruntime"]
    print("\nmedian seconds from spawn to the first answer (fresh process each)")
    for name, seconds in figures.items():
        print(f"  {name:36s} {seconds:7.3f} s   {seconds / tandem:6.2f}x tandem")
    within = tandem <= BUDGET * physical
    print(
        f"  tandem / physical floor = {tandem / physical:.3f}x, tandem / import floor = "
        f"{tandem / imports:.3f}x (budget {BUDGET:.2f}x the physical floor): "
        f"{'within budget' if within else 'OVER BUDGET'}"
    )
    return within


def main() -> None:
    print(f"cold start, {ROUNDS} interleaved rounds; {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        found, note = contenders(Path(tmp))
        print(note)
        figures = measure(found, ROUNDS, Path(tmp))
    report(figures)
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
