"""What each task means: its metrics and which way each is better, its estimators, its
fairness measure. Written once here; the spec, the gates, training and the report read it.
"""

from __future__ import annotations

from dataclasses import dataclass

BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"
TASKS = (BINARY, MULTICLASS, REGRESSION)
CLASSIFICATION = (BINARY, MULTICLASS)

HIGHER, LOWER = "higher", "lower"  # which way a metric is better

# Holdout metrics per task, in report order, with their direction. Bounded ones lie in [0, 1].
METRICS: dict[str, dict[str, str]] = {
    BINARY: {
        "accuracy": HIGHER,
        "precision": HIGHER,
        "recall": HIGHER,
        "f1": HIGHER,
        "roc_auc": HIGHER,
        "log_loss": LOWER,
    },
    MULTICLASS: {
        "accuracy": HIGHER,
        "f1_macro": HIGHER,
        "f1_weighted": HIGHER,
        "log_loss": LOWER,
    },
    REGRESSION: {
        "rmse": LOWER,
        "mae": LOWER,
        "r2": HIGHER,
        "mape": LOWER,  # only when no true value is 0 (else undefined, left out)
    },
}
BOUNDED = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "f1_macro", "f1_weighted"})
PRIMARY_METRIC = {BINARY: "roc_auc", MULTICLASS: "f1_macro", REGRESSION: "rmse"}
# permutation importance is the drop in this scikit-learn scorer
IMPORTANCE_SCORER = {
    BINARY: "roc_auc",
    MULTICLASS: "f1_macro",
    REGRESSION: "neg_root_mean_squared_error",
}


def direction(metric: str) -> str:
    """HIGHER or LOWER; a metric of any task."""
    for metrics in METRICS.values():
        if metric in metrics:
            return metrics[metric]
    raise KeyError(metric)


def better_by(metric: str, candidate: float, champion: float) -> float:
    """How much better `candidate` is than `champion` (negative: worse), either direction."""
    return candidate - champion if direction(metric) == HIGHER else champion - candidate


@dataclass(frozen=True)
class Fairness:
    """How a task compares groups: a per-group measure, the gap between groups, its name."""

    measure: str  # per-group value, in the report
    gap: str  # the largest difference of `measure` between judged groups (flat metric name)
    bounded: bool  # the gap lies in [0, 1] (a rate); else it is in the target's units
    title: str  # the gap in words
    measure_title: str  # the measure in words


FAIRNESS = {
    BINARY: Fairness(
        "tpr", "equal_opportunity_difference", True, "equal-opportunity difference",
        "true positive rate",
    ),
    MULTICLASS: Fairness(
        "recall_macro", "recall_difference", True, "macro recall difference", "macro recall"
    ),
    REGRESSION: Fairness("mae", "mae_difference", False, "MAE difference", "MAE"),
}  # fmt: skip
TITLES = {f.gap: f.title for f in FAIRNESS.values()}
MEASURE_TITLES = {f.measure: f.measure_title for f in FAIRNESS.values()}

CLASSIFIER, REGRESSOR = "classifier", "regressor"

# estimator.kind -> the class for classification and for regression ("module:Class").
# A kind missing a side does not take that task (logistic regression does not regress).
ESTIMATORS: dict[str, dict[str, str]] = {
    "logistic_regression": {CLASSIFIER: "sklearn.linear_model:LogisticRegression"},
    "linear_regression": {REGRESSOR: "sklearn.linear_model:LinearRegression"},
    "ridge": {REGRESSOR: "sklearn.linear_model:Ridge"},
    "random_forest": {
        CLASSIFIER: "sklearn.ensemble:RandomForestClassifier",
        REGRESSOR: "sklearn.ensemble:RandomForestRegressor",
    },
    "gradient_boosting": {
        CLASSIFIER: "sklearn.ensemble:GradientBoostingClassifier",
        REGRESSOR: "sklearn.ensemble:GradientBoostingRegressor",
    },
    # categorical features reach it one-hot encoded by the pipeline, never through its own
    # `categorical_features`, whose ONNX conversion does not match scikit-learn's answers
    "hist_gradient_boosting": {
        CLASSIFIER: "sklearn.ensemble:HistGradientBoostingClassifier",
        REGRESSOR: "sklearn.ensemble:HistGradientBoostingRegressor",
    },
    "xgboost": {CLASSIFIER: "xgboost:XGBClassifier", REGRESSOR: "xgboost:XGBRegressor"},
    "lightgbm": {CLASSIFIER: "lightgbm:LGBMClassifier", REGRESSOR: "lightgbm:LGBMRegressor"},
}
# kinds outside scikit-learn: the pyproject extra that installs them (and onnxmltools, which
# converts them to ONNX), and the modules that extra brings
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "xgboost": ("xgboost", ("xgboost", "onnxmltools")),
    "lightgbm": ("lightgbm", ("lightgbm", "onnxmltools")),
}
# defaults Tandem sets unless the spec's params say otherwise
DEFAULT_PARAMS: dict[str, dict[str, object]] = {
    "lightgbm": {"verbose": -1},  # no per-iteration warnings in the job's log
}
# linear models see standardized numeric features; trees need no scaling (and a scaler in
# front of float32 tree thresholds costs ONNX parity)
SCALED = frozenset({"logistic_regression", "linear_regression", "ridge"})


def side(task: str) -> str:
    return REGRESSOR if task == REGRESSION else CLASSIFIER


def kinds_for(task: str) -> list[str]:
    """The estimator kinds that take `task`."""
    return [kind for kind, sides in ESTIMATORS.items() if side(task) in sides]
