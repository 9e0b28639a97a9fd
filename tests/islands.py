"""A tiny dataset whose categorical feature is often missing, so the one-hot encoder learns a
level for a missing value that weighs on the prediction: scoring an unseen category as
missing then differs from scoring it as an all-zero (ignored) category."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

ISLANDS = ["Biscoe", "Dream", "Torgersen"]

ROW = {"bill": 44.0, "mass": 4200.0, "island": "Dream"}


def islands_frame(rows: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    island = rng.choice([*ISLANDS, None], rows).astype(object)
    bill = rng.normal(44, 5, rows)
    frame = pd.DataFrame({"bill": bill, "mass": rng.normal(4200, 600, rows), "island": island})
    # a missing island makes the positive class likely: its level carries real weight
    score = (bill - 44) / 5 + 3.0 * pd.isna(island) + rng.normal(0, 0.5, rows)
    frame["adelie"] = (score > 1.0).astype(int)
    return frame


def islands_spec(**extra: Any) -> dict[str, Any]:
    return {
        "name": "islands",
        "target": "adelie",
        "features": [
            {"name": "bill", "type": "numeric"},
            {"name": "mass", "type": "numeric"},
            {"name": "island", "type": "categorical"},
        ],
        "dataset": {"source": "inline"},
        "estimator": {"kind": "logistic_regression", "params": {"max_iter": 500}},
        **extra,
    }
