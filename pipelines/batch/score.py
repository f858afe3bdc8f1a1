"""Scoring a batch of rows with the version's TorchScript, as the online predictor does.

`Scorer` is the Ray Data actor (`map_batches(Scorer, ...)`): it loads the run directory with the
predictor's own code (`pipelines.predictor.artifact`) and runs the predictor's forward pass
(`pipelines.predictor.scorer.LocalCompute`: float32 rows in the manifest's feature order, the
output checked for shape and finiteness), on CUDA when asked. So a row scored here and the same
features sent to the predictor get the same probability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from pipelines.predictor import artifact
from pipelines.predictor.scorer import LocalCompute
from slipway.api.batchprediction import PREDICTION_COLUMN, RUN_COLUMN, VERSION_COLUMN

Forward = Callable[[np.ndarray], np.ndarray]


def score_table(forward: Forward, table: pa.Table, columns: Sequence[str], version: int, run: str) -> pa.Table:
    """The batch without its feature columns, plus the probability, the version and the run.

    Arrow in and out (Ray Data's blocks), so no batch goes through pandas; a null feature is NaN."""
    values = np.empty((table.num_rows, len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        values[:, j] = table.column(name).to_numpy(zero_copy_only=False)
    probabilities = forward(values) if len(values) else np.zeros(0, dtype=np.float32)
    out = table.drop_columns(list(columns))
    out = out.append_column(PREDICTION_COLUMN, pa.array(probabilities, type=pa.float32()))
    out = out.append_column(VERSION_COLUMN, pa.array(np.full(table.num_rows, version, dtype=np.int64)))
    return out.append_column(RUN_COLUMN, pa.array([run] * table.num_rows, type=pa.string()))


class Scorer:
    """One Ray Data actor: the model loaded once, then one forward pass per batch."""

    def __init__(self, model_uri: str, columns: Sequence[str], version: int, run: str, device: str = "cpu") -> None:
        loaded = artifact.load(model_uri)
        model = loaded.model if device == "cpu" else loaded.model.to(device)
        if len(columns) != len(loaded.manifest.features):
            raise ValueError(f"{len(columns)} feature columns for a model of {len(loaded.manifest.features)}")
        self.compute = LocalCompute(model, len(columns), device=device)
        self.columns, self.version, self.run = list(columns), version, run

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_table(self.compute.forward, batch, self.columns, self.version, self.run)
