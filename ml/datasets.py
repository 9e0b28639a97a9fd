"""Built-in datasets, addressed by URI so specs stay self-contained.

- `sklearn://breast_cancer`: scikit-learn's bundled Wisconsin breast cancer data (no download).
- `sklearn://iris`: the iris flowers, 3 classes by name, with the column names scikit-learn
  gives them (`sepal length (cm)`: spaces and parentheses, as real exports have).
- `sklearn://diabetes`: disease progression after one year (a number) from age, sex, BMI,
  blood pressure and six serum measurements, unscaled (sex is 1 or 2).
- `synthetic://credit?rows=4000&seed=7&shift=0.0`: a seeded synthetic credit-default data set
  with a sensitive attribute (`gender`), a personal-data column (`customer_id`) and a knob for
  distribution shift (0 = the training distribution; 1 = a strong covariate and prior shift).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

from ml.errors import DataError


def breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
    # scikit-learn encodes malignant as 0; the positive class we predict is malignant.
    frame["malignant"] = (frame.pop("target") == 0).astype(int)
    return frame


def iris() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.copy()
    frame["species"] = [str(bunch.target_names[i]) for i in frame.pop("target")]
    return frame


def diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame.copy()
    frame["progression"] = frame.pop("target")
    return frame


SKLEARN = {"breast_cancer": breast_cancer, "iris": iris, "diabetes": diabetes}


def credit(rows: int = 4000, seed: int = 7, shift: float = 0.0) -> pd.DataFrame:
    """Synthetic loan applications. `shift` moves income down, debt up and the default rate up."""
    if rows < 10:
        raise DataError(f"synthetic://credit: rows must be >= 10 (got {rows})")
    if not 0.0 <= shift <= 1.0:
        raise DataError(f"synthetic://credit: shift must be within [0, 1] (got {shift})")
    rng = np.random.default_rng(seed)
    gender = rng.choice(["female", "male"], size=rows, p=[0.48, 0.52])
    age = rng.integers(21, 75, size=rows)
    income = rng.lognormal(mean=10.6 - 0.35 * shift, sigma=0.45, size=rows)
    debt_ratio = np.clip(rng.beta(2.0 + 2.0 * shift, 5.0, size=rows), 0, 1)
    employment = rng.choice(
        ["salaried", "self_employed", "unemployed"],
        size=rows,
        p=[0.70 - 0.15 * shift, 0.22, 0.08 + 0.15 * shift],
    )
    late_payments = rng.poisson(0.6 + 1.2 * shift, size=rows)
    credit_lines = rng.integers(1, 12, size=rows)
    logit = (
        -2.6
        + 5.5 * debt_ratio
        - 1.6 * (np.log(income) - 10.6)
        + 0.9 * late_payments
        + 1.6 * (employment == "unemployed")
        + 0.4 * (employment == "self_employed")
        - 0.02 * (age - 45)
        + 0.15 * (gender == "male")  # a small group effect, so fairness gaps are real
        + 0.6 * shift
    )
    default = rng.random(rows) < 1 / (1 + np.exp(-logit))
    income_rounded = np.round(income, 2)
    # a few missing incomes, as real application data has
    income_rounded[rng.random(rows) < 0.01] = np.nan
    return pd.DataFrame(
        {
            "customer_id": [f"C{seed:03d}{i:07d}" for i in range(rows)],
            "age": age.astype(float),
            "income": income_rounded,
            "debt_ratio": np.round(debt_ratio, 4),
            "employment": employment,
            "late_payments": late_payments.astype(float),
            "credit_lines": credit_lines.astype(float),
            "gender": gender,
            "default": default.astype(int),
        }
    )


def load_builtin(uri: str) -> pd.DataFrame:
    parsed = urlparse(uri)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    name = parsed.netloc or parsed.path.strip("/")
    if parsed.scheme == "sklearn" and name in SKLEARN:
        return SKLEARN[name]()
    if parsed.scheme == "synthetic" and name == "credit":
        try:
            return credit(
                rows=int(query.get("rows", 4000)),
                seed=int(query.get("seed", 7)),
                shift=float(query.get("shift", 0.0)),
            )
        except ValueError as exc:
            raise DataError(f"{uri}: bad parameter: {exc}") from None
    raise DataError(
        f"{uri}: unknown built-in dataset "
        f"({', '.join(f'sklearn://{n}' for n in SKLEARN)}, synthetic://credit)"
    )


BUILTIN_SCHEMES = ("sklearn", "synthetic")
