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
from ml import tasks
from ml.errors import SpecError


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
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in tasks.ESTIMATORS:
            raise ValueError(f"unknown kind {value!r}: expected one of {list(tasks.ESTIMATORS)}")
        return value

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

    min_metrics: dict[str, float] = Field(
        default_factory=dict, description="floors for metrics where higher is better"
    )
    max_metrics: dict[str, float] = Field(
        default_factory=dict, description="ceilings for metrics where lower is better (rmse)"
    )
    primary_metric: str | None = Field(
        default=None, description="champion/challenger metric (default: the task's own)"
    )
    min_improvement: float = Field(
        default=0.0,
        description="how much better than the champion on the primary metric, at least "
        "(in the metric's own direction: a lower rmse is an improvement)",
    )
    max_fairness_gap: Annotated[float, Field(ge=0)] | None = None
    min_group_size: Annotated[
        int,
        Field(ge=1, description="holdout rows a group needs to enter the fairness gap"),
    ] = 30
    max_p99_latency_ms: Annotated[float, Field(gt=0)] | None = None

    def check(self, task: str) -> None:
        """The gates against the task's metrics and their directions (ValueError names the
        key): a floor on a lower-is-better metric would pass the worst model."""
        metrics = tasks.METRICS[task]
        for key, values, wanted in (
            ("min_metrics", self.min_metrics, tasks.HIGHER),
            ("max_metrics", self.max_metrics, tasks.LOWER),
        ):
            for metric, bound in sorted(values.items()):
                if metric not in metrics:
                    raise ValueError(
                        f"gates.{key}: unknown metric {metric!r} for task = {task!r}: "
                        f"expected some of {list(metrics)}"
                    )
                if metrics[metric] != wanted:
                    other = "max_metrics" if key == "min_metrics" else "min_metrics"
                    raise ValueError(
                        f"gates.{key}: {metric} is better when {metrics[metric]}; "
                        f"put its bound under gates.{other}"
                    )
                if metric in tasks.BOUNDED and not 0 <= bound <= 1:
                    raise ValueError(f"gates.{key}.{metric}: {bound} is outside [0, 1]")
        if self.primary_metric is not None and self.primary_metric not in metrics:
            raise ValueError(
                f"gates.primary_metric: unknown metric {self.primary_metric!r} for "
                f"task = {task!r}: expected one of {list(metrics)}"
            )
        gap = self.max_fairness_gap
        if gap is not None and tasks.FAIRNESS[task].bounded and gap > 1:
            raise ValueError(
                f"gates.max_fairness_gap: {gap} is outside [0, 1] "
                f"({tasks.FAIRNESS[task].gap} is a difference of rates)"
            )


class ModelSpec(_Strict):
    name: Annotated[str, Field(description=MODEL_NAME_RULE)]
    description: str = ""
    dataset: DatasetSpec
    target: Annotated[str, Field(min_length=1)]
    task: Literal[tasks.TASKS] = tasks.BINARY  # type: ignore[valid-type]
    positive_label: int | float | str | None = Field(
        default=None, description="binary only: the label predicted as class 1 (default 1)"
    )
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
        if self.positive_label is not None and self.task != tasks.BINARY:
            raise ValueError(
                f"positive_label applies to task = 'binary' only (this spec's task is "
                f"{self.task!r}); remove it"
            )
        if tasks.side(self.task) not in tasks.ESTIMATORS[self.estimator.kind]:
            raise ValueError(
                f"estimator.kind {self.estimator.kind!r} does not take task = {self.task!r}: "
                f"use one of {tasks.kinds_for(self.task)}"
            )
        self.gates.check(self.task)
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
    def positive(self) -> int | float | str:
        """The positive label of a binary target (1 unless the spec says otherwise)."""
        return 1 if self.positive_label is None else self.positive_label

    @property
    def primary_metric(self) -> str:
        """The metric a challenger must improve over the champion."""
        return self.gates.primary_metric or tasks.PRIMARY_METRIC[self.task]

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


def _problem(origin: str, error: Any) -> str:
    """`origin: key: what is wrong` (a check across keys names its keys in the message)."""
    message = error["msg"].removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    return f"{origin}: {where}: {message}" if where else f"{origin}: {message}"


def parse_spec(
    raw: dict[str, Any], origin: str = "<spec>", base_dir: Path | None = None
) -> ModelSpec:
    """Validate a spec mapping; relative dataset paths resolve against `base_dir`."""
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem(origin, e) for e in exc.errors()]
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
