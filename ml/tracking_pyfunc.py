"""The MLflow `python_function` model Tandem logs: model.onnx fed from a DataFrame.

Logged by ml/tracking.py as an MLflow "model from code": MLflow copies this file into the
model, so `mlflow.pyfunc.load_model(uri).predict(frame)` needs onnxruntime, numpy and pandas,
not Tandem. Why not the ONNX flavor's own pyfunc: given a DataFrame it feeds each graph input
`frame[input_name].values`, a 1-D column, while Tandem's graph takes one [N, n] float input
holding every numeric feature and one [N, 1] string input per categorical feature
(ml/artifact.onnx_inputs). This wrapper builds those feeds from the card's `onnx_inputs`,
as deploy/inference.py does, and answers one column per class (probabilities) or a
`prediction` column (a regressor).
"""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pandas as pd

MISSING = "__missing__"  # the level a missing category maps to (ml/data.py)


def _category(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return str(value)


class TandemOnnxModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import onnxruntime as ort

        with open(context.artifacts["card"], encoding="utf-8") as handle:
            card = json.load(handle)
        self.inputs = card["onnx_inputs"]
        self.classes = card.get("labels") or card.get("classes")  # the spec's own labels
        self.session = ort.InferenceSession(
            context.artifacts["onnx"], providers=["CPUExecutionProvider"]
        )

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        feeds = {}
        for layout in self.inputs:
            if layout["dtype"] == "string":
                column = frame[layout["columns"][0]].map(_category)
                feeds[layout["name"]] = column.to_numpy(dtype=object).reshape(-1, 1)
            else:
                feeds[layout["name"]] = np.column_stack(
                    [
                        pd.to_numeric(frame[c]).to_numpy(dtype=np.float32, na_value=np.nan)
                        for c in layout["columns"]
                    ]
                ).astype(np.float32)
        outputs = self.session.run(None, feeds)
        if len(outputs) >= 2:  # a classifier: label, probabilities (zipmap off)
            proba = np.asarray(outputs[1])
            names = [str(c) for c in self.classes or range(proba.shape[1])]
            return pd.DataFrame(proba, columns=names, index=frame.index)
        return pd.DataFrame({"prediction": np.asarray(outputs[0]).ravel()}, index=frame.index)


mlflow.models.set_model(TandemOnnxModel())
