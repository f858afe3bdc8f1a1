"""The entities to score, joined point in time with the feature service (training's join).

The scoring frame is the input's own columns, in its order, plus one float32 column per model
feature (`feature_columns`), named so that no input column is shadowed: the values the model is
given, in the manifest's feature order, NaN where the store has none (the model imputes them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipelines.churn import dataset, sources
from pipelines.churn.failures import ColumnNotFound, DataValidationFailed

from .config import FIELDS

FEATURE_PREFIX = "__slipway_feature_"


def feature_columns(count: int) -> list[str]:
    """The scoring frame's names of the model's features, in the manifest's order."""
    return [f"{FEATURE_PREFIX}{i}" for i in range(count)]


def entity_requests(frame: pd.DataFrame, service: sources.FeatureServiceInfo, timestamp_column: str) -> pd.DataFrame:
    """The rows' keys and times as Feast takes them; a timestamp column of no times is ColumnNotFound
    (no data validation here: a column of no times is as wrong a column as a missing one)."""
    keys = list(dict.fromkeys([*service.join_keys, timestamp_column]))
    try:
        return sources.entity_dataframe(frame[keys], timestamp_column, FIELDS)
    except DataValidationFailed as error:
        detail = f"is not a column of times: {error.report.reason}"
        raise ColumnNotFound(FIELDS.timestamp, timestamp_column, detail) from error


def check_input(entities: sources.EntityDataset, service: sources.FeatureServiceInfo, timestamp_column: str) -> None:
    """The timestamp column and the service's entity keys must be columns of the input, and the
    timestamp column must hold times: checked before any block is joined."""
    sources.check_columns(entities, service, timestamp_column, None, FIELDS)
    entity_requests(entities.frame, service, timestamp_column)


def features_frame(joined: pd.DataFrame, model_features: Sequence[str], rows: int) -> pd.DataFrame:
    """The model's features from a joined frame, as the predictor hands them to the model: float32,
    the manifest's order, NaN for a value (or a whole feature) the service does not provide."""
    present = [f for f in model_features if f in joined.columns]
    matrix = np.full((rows, len(model_features)), np.nan, dtype=np.float32)
    if present:
        values = dataset.feature_matrix(joined, present)
        for j, name in enumerate(present):
            matrix[:, list(model_features).index(name)] = values[:, j]
    return pd.DataFrame(matrix, columns=feature_columns(len(model_features)))


def scoring_frame(
    store: Any,
    frame: pd.DataFrame,
    service: sources.FeatureServiceInfo,
    timestamp_column: str,
    model_features: Sequence[str],
) -> pd.DataFrame:
    """The rows with the model's features as of each row's time (see the module doc)."""
    frame = frame.reset_index(drop=True)
    requests = entity_requests(frame, service, timestamp_column)
    if len(frame):
        joined = sources.historical_features(store, service, requests)
    else:
        joined = requests.reindex(columns=[*requests.columns, *service.features])
    features = features_frame(joined, model_features, len(frame))
    return pd.concat([frame, features], axis=1)
