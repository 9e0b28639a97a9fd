"""ModelSpec: one TOML file per model says what to train, on what, and what it must pass.

A bad spec is a SpecError naming the file, the key and what was expected, e.g.
`examples/credit.toml: gates.max_fairness_gap: Input should be less than or equal to 1`.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contract.naming import MODEL_NAME_RULE, check_model_name
from contract.serving import UNSEEN_ERROR, UNSEEN_RULES
from ml.errors import SpecError

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")

# scikit-learn estimators that skl2onnx converts faithfully (see reference/pitfalls.md:
# HistGradientBoosting fails with skl2onnx 1.20 + scikit-learn 1.9, so it is not offered).
ESTIMATORS = {
    "logistic_regression": "sklearn.linear_model:LogisticRegression",
    "gradient_boosting": "sklearn.ensemble:GradientBoostingClassifier",
    "random_forest": "sklearn.ensemble:RandomForestClassifier",
}


class _Strict(BaseModel):
    # NaN and infinity are refused: a gate against NaN never decides, and neither fits in JSON
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Feature(_Strict):
    name: Annotated[str, Field(min_length=1)]
    type: Literal["numeric", "categorical"]


class DatasetSpec(_Strict):
    source: Annotated[str, Field(min_length=1, description="a path, or a URI in an artifact store")]
    format: Literal["csv", "parquet", "auto"] = "auto"


class EstimatorSpec(_Strict):
    kind: Literal["logistic_regression", "gradient_boosting", "random_forest"]
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        # TOML allows nan and inf; the model card (strict JSON) could not record them
        odd = sorted(k for k, v in value.items() if isinstance(v, float) and not math.isfinite(v))
        if odd:
            raise ValueError(f"{odd} must be finite numbers (TOML nan/inf are not accepted)")
        return value


class SplitSpec(_Strict):
    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.25
    seed: int = 42


class Gates(_Strict):
    """What a candidate must pass before it may be registered as approvable."""

    min_metrics: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    primary_metric: Literal["accuracy", "precision", "recall", "f1", "roc_auc"] = "roc_auc"
    min_improvement: float = Field(
        default=0.0, description="challenger minus champion on the primary metric, at least"
    )
    max_fairness_gap: Annotated[float, Field(ge=0, le=1)] | None = None
    min_group_size: Annotated[
        int,
        Field(ge=1, description="holdout rows a group needs to enter the fairness gap"),
    ] = 30
    max_p99_latency_ms: Annotated[float, Field(gt=0)] | None = None

    @field_validator("min_metrics")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}: expected some of {list(METRICS)}")
        return value


class ModelSpec(_Strict):
    name: Annotated[str, Field(description=MODEL_NAME_RULE)]
    description: str = ""
    dataset: DatasetSpec
    target: Annotated[str, Field(min_length=1)]
    positive_label: int | str = 1
    features: Annotated[list[Feature], Field(min_length=1)]
    sensitive_attribute: str | None = None
    personal_data: list[str] = Field(
        default_factory=list,
        description="columns the model must never see nor the artifact hold (IDs, names, ...)",
    )
    unseen_categories: Literal[UNSEEN_RULES] = Field(
        default=UNSEEN_ERROR,
        description=(
            "a categorical value the model never saw in training: 'error' refuses the "
            "request (422 naming the field), 'missing' scores it as a missing value and "
            "lists it in the answer's 'unseen'"
        ),
    )
    estimator: EstimatorSpec
    split: SplitSpec = SplitSpec()
    gates: Gates = Gates()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_model_name(value)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"features: duplicate names {duplicates}")
        if self.target in names:
            raise ValueError(f"target {self.target!r} is also listed as a feature")
        if self.sensitive_attribute == self.target:
            raise ValueError("sensitive_attribute cannot be the target")
        if self.gates.max_fairness_gap is not None and not self.sensitive_attribute:
            raise ValueError("gates.max_fairness_gap needs a sensitive_attribute")
        self._no_personal_data_in_the_artifact(names)
        return self

    def _no_personal_data_in_the_artifact(self, features: list[str]) -> None:
        """A personal column is only ever read, never learned from nor described.

        A feature's values end up inside model.onnx (categories of the one-hot encoder,
        tree thresholds), the input schema (categories, min/max) and baseline.json
        (quantile edges, frequencies); the target's labels and the sensitive attribute's
        groups are written into model_card.json. None of them may be personal.
        """
        for column in self.personal_data:
            if column in features:
                raise ValueError(
                    f"personal_data: column {column!r} is also a feature: a model trained on "
                    "it would carry its raw values inside model.onnx (and its statistics in "
                    "the schema and baseline); drop it from features"
                )
            if column == self.target:
                raise ValueError(
                    f"personal_data: column {column!r} is the target: its labels are written "
                    "into model_card.json; a personal column cannot be the target"
                )
            if column == self.sensitive_attribute:
                raise ValueError(
                    f"personal_data: column {column!r} is the sensitive_attribute: fairness "
                    "results name each group by its value in model_card.json; list it only "
                    "as sensitive_attribute"
                )

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.type == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.type == "categorical"]

    @property
    def columns(self) -> list[str]:
        """Every column the data must hold: features, target, sensitive attribute."""
        extra = [self.sensitive_attribute] if self.sensitive_attribute else []
        return list(dict.fromkeys([*self.feature_names, self.target, *extra]))


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_spec(
    raw: dict[str, Any], origin: str = "<spec>", base_dir: Path | None = None
) -> ModelSpec:
    """Validate a spec mapping; relative dataset paths resolve against `base_dir`."""
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{origin}: {_location(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SpecError("\n".join(problems)) from None
    source = spec.dataset.source
    if base_dir is not None and "://" not in source and not Path(source).is_absolute():
        resolved = str((base_dir / source).resolve())
        spec = spec.model_copy(
            update={"dataset": spec.dataset.model_copy(update={"source": resolved})}
        )
    return spec


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate a spec file. Errors name the file and the key."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a spec file") from None
    except PermissionError:
        raise SpecError(f"{path}: cannot read the spec file: permission denied") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file: {exc.strerror or exc}") from None
    try:
        text = content.decode("utf-8-sig")  # tolerate the BOM some editors write
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path}: not UTF-8 text (byte 0x{content[exc.start]:02x} at offset {exc.start}); "
            "TOML files must be saved as UTF-8"
        ) from None
    try:
        # JSON: the spec as a job receives it (ml/clouds/packaging.py), validated once already
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not valid JSON: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(raw, origin=str(path), base_dir=path.parent)
