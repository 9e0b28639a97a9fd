"""The training entry point: the SAME script runs locally, on SageMaker and on Azure ML.

    python -m ml.train --spec examples/credit.toml [--data PATH_OR_URI] [--model-dir DIR]

Where it runs is read from the environment, following each platform's conventions:
- SageMaker training container: `SM_MODEL_DIR` (the artifact goes there and SageMaker
  tars it to S3), `SM_CHANNEL_TRAIN` (a directory holding the dataset),
  `/opt/ml/input/config/hyperparameters.json` (spec path, estimator overrides; the directory
  is `SM_INPUT_CONFIG_DIR` when set),
  `TRAINING_JOB_NAME` (the run id).
- Azure ML command job: inputs and outputs arrive as arguments (`--data ${{inputs.data}}
  --model-dir ${{outputs.model}}`), `AZUREML_RUN_ID` names the run.
Seeded and deterministic: the same data and spec give the same metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml import __version__, artifact, data, drift, evaluate, tasks
from ml.errors import SpecError
from ml.spec import ModelSpec, load_spec

# SageMaker containers also export the directory as SM_INPUT_CONFIG_DIR; it wins when set.
SAGEMAKER_INPUT_CONFIG_DIR = "/opt/ml/input/config"
IMPORTANCE_REPEATS = 5


def check(
    spec: ModelSpec,
    frame: pd.DataFrame,
    *,
    origin: str,
    overrides: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, list[Any]]:
    """Everything that needs only the spec and the data, before any fitting: the columns,
    their types, the target against the task (classes, positive label), the estimator's
    parameters.

    The training job runs it first, and the lifecycle runs it on the caller's side before a
    job is submitted: one function, so a bad spec fails with the same message in both places,
    without a (billed) job. Returns the validated frame and the labels in class-index order
    (None for a regression).
    """
    estimator(spec, overrides)
    raw_target = frame[spec.target] if spec.target in frame.columns else None
    validated = data.validate(frame, spec, origin=origin)
    return validated, data.class_labels(raw_target, spec, origin)


def estimator(spec: ModelSpec, overrides: dict[str, Any] | None = None) -> Any:
    """The spec's unfitted estimator; a SpecError names a parameter it does not take or a
    value it refuses (checked as scikit-learn's own fit would, without fitting)."""
    import importlib
    import importlib.util
    import inspect

    kind = spec.estimator.kind
    module, name = tasks.ESTIMATORS[kind][tasks.side(spec.task)].split(":")
    if kind in tasks.EXTRAS:
        extra, modules = tasks.EXTRAS[kind]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            raise SpecError(
                f"estimator.kind = {kind!r} needs {missing}, not installed: "
                f"pip install 'tandem-mlops[{extra}]'"
            )
    cls = getattr(importlib.import_module(module), name)
    params = {**spec.estimator.params, **(overrides or {})}
    defaults = tasks.DEFAULT_PARAMS.get(kind, {})
    # XGBoost and LightGBM take most parameters through **kwargs: ask get_params too (and
    # Tandem's own defaults, e.g. LightGBM's `verbose`, are passed that way)
    accepted = sorted(
        {p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs")}
        | set(cls().get_params())
        | set(defaults)
    )
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise SpecError(
            f"estimator.params: {unknown} not accepted by {name} "
            f"(estimator.kind = {spec.estimator.kind!r}); it takes {accepted}"
        )
    params = {**defaults, **params}
    if "random_state" in accepted:
        params.setdefault("random_state", spec.split.seed)
    made = cls(**params)
    validate_params = getattr(made, "_validate_params", None)  # what fit() checks first
    # (inherited by XGBoost and LightGBM without the constraints table it reads)
    if validate_params is not None and hasattr(made, "_parameter_constraints"):
        try:
            validate_params()
        except ValueError as exc:
            raise SpecError(f"estimator.params: {exc}") from None
    return made


def build_pipeline(spec: ModelSpec, overrides: dict[str, Any] | None = None):
    """Preprocessing + estimator as one scikit-learn pipeline (converted to ONNX whole)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    model = estimator(spec, overrides)
    numeric_steps = [("impute", SimpleImputer(strategy="median"))]
    if spec.estimator.kind in tasks.SCALED:
        numeric_steps.append(("scale", StandardScaler()))
    transformers = []
    if spec.numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), spec.numeric))
    if spec.categorical:
        transformers.append(
            ("categorical", OneHotEncoder(handle_unknown="ignore"), spec.categorical)
        )
    # always dense: with many one-hot columns ColumnTransformer would hand a sparse matrix on,
    # which HistGradientBoosting refuses and XGBoost reads with absent entries as missing
    # (not 0), unlike the ONNX graph (max diff 0.067 in probability measured)
    prepare = ColumnTransformer(transformers, sparse_threshold=0)
    return Pipeline([("prepare", prepare), ("estimator", model)])


def code_version() -> str:
    """The git commit of the training code when there is one, else the package version."""
    if env := os.environ.get("TANDEM_CODE_VERSION"):
        return env
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{commit}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return f"tandem-{__version__}"


@dataclass
class TrainResult:
    artifact_dir: Path
    card: dict[str, Any]


def holdout_evaluation(model: Any, test: pd.DataFrame, spec: ModelSpec) -> evaluate.Evaluation:
    """Score an ONNX model (deploy.inference.Model) on the holdout rows."""
    output = model.scores(model.feeds_from_columns({c: test[c] for c in spec.feature_names}))
    sensitive = data.groups(test[spec.sensitive_attribute]) if spec.sensitive_attribute else None
    return evaluate.score(
        test[spec.target].to_numpy(),
        output,
        sensitive,
        spec.sensitive_attribute,
        min_group_size=spec.gates.min_group_size,
        task=spec.task,
        labels=model.classes if spec.task != tasks.REGRESSION else None,
    )


def native_output(pipeline: Any, rows: pd.DataFrame, task: str) -> np.ndarray:
    """The fitted pipeline's answer in the ONNX model's shape: class probabilities, or values."""
    if task == tasks.REGRESSION:
        return np.asarray(pipeline.predict(rows), dtype=float).reshape(-1)
    return np.asarray(pipeline.predict_proba(rows), dtype=float)


def fit(
    spec: ModelSpec,
    frame: pd.DataFrame,
    out_dir: Path,
    *,
    run_id: str,
    environment: str = "local",
    overrides: dict[str, Any] | None = None,
    data_uri: str = "",
) -> TrainResult:
    """Validate, split, fit, convert, evaluate and seal one artifact into `out_dir`."""
    from sklearn.inspection import permutation_importance

    from deploy.inference import Model, columns_from_schema

    started = time.perf_counter()
    frame, labels = check(spec, frame, origin=data_uri or spec.dataset.source, overrides=overrides)
    train, test = data.split(frame, spec)
    features = spec.feature_names
    pipeline = build_pipeline(spec, overrides)
    pipeline.fit(train[features], train[spec.target])
    fit_seconds = time.perf_counter() - started

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = data.input_schema(train, spec)
    for entry, onnx_name in zip(
        schema["features"], artifact.input_names(spec)["by_column"].values(), strict=True
    ):
        entry["onnx_name"] = onnx_name  # the feature's name inside model.onnx
    inputs = artifact.onnx_inputs(spec)
    metadata = artifact.onnx_metadata(
        labels=labels,
        input_schema=schema,
        inputs=inputs,
        input_names=artifact.input_names(spec),
        task=spec.task,
        run_id=run_id,
        missing_token=data.MISSING,
    )
    (out_dir / artifact.ONNX).write_bytes(artifact.to_onnx(pipeline, spec, metadata))
    model = Model(
        out_dir / artifact.ONNX,
        columns_from_schema(schema),
        {"task": spec.task, "labels": labels},
        name=spec.name,
        inputs=inputs,
    )

    # Metrics come from the ONNX model: that is what endpoints serve.
    evaluation = holdout_evaluation(model, test, spec)
    onnx_output = model.scores(model.feeds_from_columns({c: test[c] for c in features}))
    parity = float(np.max(np.abs(onnx_output - native_output(pipeline, test[features], spec.task))))
    # rows the schema accepts by construction (a holdout row may hold a category training
    # never saw, which the endpoint refuses): the gate times what a served request costs
    records = train[features].head(len(test)).replace({np.nan: None}).to_dict("records")
    measured = evaluate.latency(
        lambda i: model.predict_payload({"instances": [records[i]]}), len(records)
    )
    evaluation.latency_ms = measured.percentiles()
    evaluation.latency_method = measured.method

    importance = permutation_importance(
        pipeline,
        test[features],
        test[spec.target],
        scoring=tasks.IMPORTANCE_SCORER[spec.task],
        n_repeats=IMPORTANCE_REPEATS,
        random_state=spec.split.seed,
    )
    importances = sorted(
        (
            {"feature": name, "mean": float(mean), "std": float(std)}
            for name, mean, std in zip(
                features, importance.importances_mean, importance.importances_std, strict=True
            )
        ),
        key=lambda item: -item["mean"],
    )
    estimator_params = {
        k: _param(v)
        for k, v in pipeline.named_steps["estimator"].get_params().items()
        if _jsonable(v)
    }
    card = {
        "run_id": run_id,
        "spec": spec.model_dump(mode="json"),
        "params": estimator_params,
        "evaluation": evaluation.to_dict(),
        "metrics": evaluation.flat_metrics(),
        "onnx_parity_max_abs_diff": parity,
        "feature_importances": importances,
        "data": {
            "uri": data_uri or spec.dataset.source,
            "hash": data.content_hash(frame),
            "rows": len(frame),
            "train_rows": len(train),
            "test_rows": len(test),
        },
        "input_schema": schema,
        "onnx_inputs": inputs,
        "input_names": artifact.input_names(spec),
        "task": spec.task,
        # classification: the estimator's class indexes and what each means in the data
        "classes": [_param(c) for c in getattr(pipeline, "classes_", np.array([])).tolist()]
        or None,
        "labels": labels,
        "onnx_opset": artifact.TARGET_OPSET,
        "code_version": code_version(),
        "environment": environment,
        "training_seconds": round(time.perf_counter() - started, 3),
        "fit_seconds": round(fit_seconds, 3),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    artifact.write_json(out_dir / artifact.CARD, card)
    train_output = model.scores(model.feeds_from_columns({c: train[c] for c in features}))
    artifact.write_json(
        out_dir / artifact.BASELINE, drift.baseline(train, spec, train_output, labels)
    )
    artifact.seal(out_dir)
    return TrainResult(out_dir, card)


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _param(value: Any) -> Any:
    # an estimator parameter of inf (e.g. from --param C=Infinity) is recorded as the string
    # "inf": strict JSON has no infinity, and null would read as "the default"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _data_file(directory: Path) -> str:
    """The one dataset file in a SageMaker channel / Azure ML folder input."""
    if directory.is_file():
        return str(directory)
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".csv", ".parquet", ".pq"))
    if len(files) != 1:
        raise SystemExit(f"expected one .csv/.parquet file in {directory}, found {len(files)}")
    return str(files[0])


def resolve_environment(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Fill in unset arguments from SageMaker / Azure ML conventions; return env + overrides."""
    overrides: dict[str, Any] = {}
    if "SM_MODEL_DIR" in os.environ or "SM_TRAINING_ENV" in os.environ:
        environment = "sagemaker"
        hyper: dict[str, Any] = {}
        config_dir = Path(os.environ.get("SM_INPUT_CONFIG_DIR") or SAGEMAKER_INPUT_CONFIG_DIR)
        if (config_dir / "hyperparameters.json").is_file():
            hyper = json.loads((config_dir / "hyperparameters.json").read_text())
        # SageMaker passes every hyperparameter value as a string (JSON-encoded by its SDKs)
        hyper = {k: _decode(v) for k, v in hyper.items() if not k.startswith("sagemaker_")}
        args.spec = args.spec or hyper.pop("spec", None)
        hyper.pop("spec", None)
        # The channel holds a local copy; the card records where it came from (an S3 URI),
        # so the lifecycle can read the same rows again when it scores a champion.
        source = hyper.pop("data_uri", None)
        args.data_uri = args.data_uri or source
        args.run_id = args.run_id or os.environ.get("TRAINING_JOB_NAME")
        args.model_dir = args.model_dir or os.environ["SM_MODEL_DIR"]
        if not args.data and os.environ.get("SM_CHANNEL_TRAIN"):
            args.data = _data_file(Path(os.environ["SM_CHANNEL_TRAIN"]))
        overrides = hyper
    elif os.environ.get("AZUREML_RUN_ID"):  # Azure ML sets it for every job's run
        # (not any AZUREML_ variable: azure-ai-ml sets AZUREML_CURRENT_CLOUD in its caller's
        # environment, which a local job started by that caller inherits)
        environment = "azureml"
        args.run_id = args.run_id or os.environ.get("AZUREML_RUN_ID")
        if args.data and Path(args.data).is_dir():  # a uri_folder input is mounted as a directory
            args.data = _data_file(Path(args.data))
    else:
        environment = "local"
    for pair in args.param or []:
        key, _, value = pair.partition("=")
        overrides[key] = _decode(value)
    return environment, overrides


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", help="model spec TOML (SageMaker: hyperparameter 'spec')")
    parser.add_argument("--data", help="dataset path or URI (default: the spec's dataset.source)")
    parser.add_argument(
        "--model-dir", help="where the artifact is written (SageMaker: SM_MODEL_DIR)"
    )
    parser.add_argument(
        "--data-uri",
        "--data_uri",  # the SageMaker training toolkit passes hyperparameters as --key value
        dest="data_uri",
        help="where the data came from, recorded in the model card (default: --data); "
        "SageMaker: hyperparameter 'data_uri'",
    )
    parser.add_argument("--run-id", help="names this run (default: job name, or a timestamp)")
    parser.add_argument(
        "--param", action="append", help="estimator override key=value (JSON value)"
    )
    # On SageMaker the training toolkit also passes every hyperparameter as `--key value`;
    # those are read from hyperparameters.json, so extra arguments are expected there only.
    args, extra = parser.parse_known_args(argv)
    environment, overrides = resolve_environment(args)
    if extra and environment != "sagemaker":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.spec:
        parser.error("--spec is required (or the 'spec' hyperparameter on SageMaker)")
    spec = load_spec(args.spec)
    run_id = args.run_id or new_run_id(spec.name)
    model_dir = Path(args.model_dir or Path("artifacts") / spec.name / run_id)
    data_uri = args.data or spec.dataset.source
    frame = data.load_frame(data_uri, fmt=spec.dataset.format)
    result = fit(
        spec,
        frame,
        model_dir,
        run_id=run_id,
        environment=environment,
        overrides=overrides,
        data_uri=args.data_uri or data_uri,
    )
    log_to_mlflow(result)
    print(
        json.dumps(
            {"run_id": run_id, "artifact_dir": str(model_dir), "metrics": result.card["metrics"]}
        )
    )
    return 0


def new_run_id(model: str) -> str:
    return f"{model}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S-%f')}"


def log_to_mlflow(result: TrainResult) -> None:
    """Mirror the sealed artifact into MLflow when MLFLOW_TRACKING_URI is set (ml/tracking.py).
    Any tracking failure is one warning: the artifact in the model dir is the job's output."""
    from ml import tracking

    tracking.log_run(result.card, result.artifact_dir)


if __name__ == "__main__":
    sys.exit(main())
