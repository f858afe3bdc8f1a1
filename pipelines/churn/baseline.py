"""The serving version scored on this run's held-out split, so mustBeatServing compares on the same data.

The operator names the version that serves (`serving` in $SLIPWAY_TRAINING_RUN). Its recorded
metric came from its own, older data; after the world moved, a fresh model can score lower on
fresh data than the old one did on old data and still be the better model. So the job loads the
serving TorchScript as the predictor does (pipelines.predictor.artifact: manifest, then model)
and feeds it the held-out rows as the predictor would (raw values in its manifest's feature order,
NaN where missing). When that cannot be done (the artifact does not load, its features are not in
this data), the manifest says why and the gate falls back to the recorded metric, saying so.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from slipway.api.artifacts import ServingEvaluation
from slipway.api.trainingrun import ServingModel

from . import dataset, metrics, storage
from .failures import first_line

BATCH_ROWS = 65536

log = logging.getLogger("pipelines.churn.baseline")


def probabilities(model: torch.jit.ScriptModule, values: np.ndarray) -> np.ndarray:
    """The model's probabilities for float32 rows, checked as the predictor checks them."""
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(values), BATCH_ROWS):
            batch = values[start : start + BATCH_ROWS]
            result = model(torch.from_numpy(np.ascontiguousarray(batch))).cpu().numpy()
            if result.shape != (len(batch),):
                raise ValueError(f"the model returned shape {tuple(result.shape)} for {len(batch)} rows")
            out.append(result)
    scores = np.concatenate(out) if out else np.zeros(0, dtype="float32")
    if not np.isfinite(scores).all():
        raise ValueError("the model returned a non-finite probability")
    return scores


def score_serving(ref: ServingModel, held_out: pd.DataFrame, labels: np.ndarray, pvc_root: str) -> ServingEvaluation:
    """The serving model's metrics on the held-out rows, or the reason it could not be scored."""
    from pipelines.predictor import artifact  # torch.jit loading, shared with the predictor

    def unscored(problem: str) -> ServingEvaluation:
        log.warning("serving version %d not scored on this run's data: %s", ref.version, problem)
        return ServingEvaluation(version=ref.version, uri=ref.uri, problem=problem)

    try:
        loaded = artifact.load(storage.resolve(ref.uri, pvc_root))
    except Exception as error:  # any failure to load falls back to the recorded metric
        return unscored(f"its artifact does not load: {first_line(error)}")
    absent = [name for name in loaded.manifest.features if name not in held_out.columns]
    if absent:
        return unscored(f"its features differ: {', '.join(absent)} not in this run's data")
    try:
        values = dataset.feature_matrix(held_out, loaded.manifest.features)
        scores = metrics.evaluate(labels, probabilities(loaded.model, values))
    except Exception as error:  # a model that fails on these rows is not compared on them
        return unscored(f"scoring failed: {first_line(error)}")
    log.info(
        "serving version %d on this run's held-out data: %s",
        ref.version,
        ", ".join(f"{k}={v:.4f}" for k, v in scores.items()),
    )
    return ServingEvaluation(version=ref.version, uri=ref.uri, metrics=scores)
