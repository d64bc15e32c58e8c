"""The common way to serve a scikit-learn model, for comparison: FastAPI, a pydantic body, a
sync endpoint that calls ``predict`` and then ``predict_proba``.

Served by ``uvicorn bench.baseline_app:app`` with uvicorn's defaults (access log on), as a
tutorial would have it; ``BENCH_MODEL`` names the ``model.joblib`` to load.
"""

from __future__ import annotations

import os
from typing import Any

import joblib
from fastapi import FastAPI
from pydantic import BaseModel


class Features(BaseModel):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


class PredictRequest(BaseModel):
    features: Features


class PredictResponse(BaseModel):
    prediction: str
    probability: float
    probabilities: dict[str, float]


model: Any = joblib.load(os.environ["BENCH_MODEL"])
app = FastAPI()


@app.post("/predict")
def predict(request: PredictRequest) -> PredictResponse:
    f = request.features
    row = [[f.sepal_length, f.sepal_width, f.petal_length, f.petal_width]]
    label = model.predict(row)[0]
    probabilities = model.predict_proba(row)[0]
    by_class = {str(c): float(p) for c, p in zip(model.classes_, probabilities, strict=True)}
    return PredictResponse(prediction=str(label), probability=by_class[str(label)],
                           probabilities=by_class)
