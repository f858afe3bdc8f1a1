"""Training data: the entity/label dataset (through fsspec) joined point in time with Feast features."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from . import storage

FEAST_TIMESTAMP = "event_timestamp"  # the column name Feast looks for in an entity dataframe


@dataclass(frozen=True)
class EntityDataset:
    frame: pd.DataFrame
    uri: str
    sha256: str


@dataclass(frozen=True)
class FeatureServiceInfo:
    name: str
    features: list[str]  # column names in the joined frame, in the service's order: the model's order
    feature_views: list[str]
    join_keys: list[str]


def read_entities(uri: str, pvc_root: str = "/mnt/pvc") -> EntityDataset:
    """The entity/label parquet file and the sha256 of its bytes."""
    data = storage.read_bytes(storage.resolve(uri, pvc_root))
    frame = pd.read_parquet(io.BytesIO(data))
    return EntityDataset(frame=frame, uri=uri, sha256=hashlib.sha256(data).hexdigest())


def open_store(repo_path: str, config: str = "local") -> Any:
    """The Feast store of a repository, through feature_repo.store (which places the registry and
    the sources in $SLIPWAY_FEAST_DATA); `config` is "local", "cluster" or a feature_store.yaml."""
    from feature_repo.store import open_store as open_feature_store

    return open_feature_store(repo_dir=repo_path, config=config)


def describe_service(store: Any, name: str) -> FeatureServiceInfo:
    """Features (in order), feature views and join keys of a Feast feature service."""
    service = store.get_feature_service(name)
    features: list[str] = []
    views: list[str] = []
    join_keys: list[str] = []
    for projection in service.feature_view_projections:
        views.append(projection.name)
        features += [field.name for field in projection.features]
        try:
            view = store.get_feature_view(projection.name)
        except Exception:  # on-demand (or other) views have no join keys of their own
            continue
        join_keys += [key for key in view.join_keys if key not in join_keys]
    return FeatureServiceInfo(name=name, features=features, feature_views=views, join_keys=join_keys)


def entity_dataframe(frame: pd.DataFrame, timestamp_column: str) -> pd.DataFrame:
    """The entity dataset as Feast wants it: the event time in `event_timestamp`, as UTC datetimes."""
    result = frame.copy()
    if timestamp_column != FEAST_TIMESTAMP:
        result = result.drop(columns=[FEAST_TIMESTAMP], errors="ignore").rename(
            columns={timestamp_column: FEAST_TIMESTAMP}
        )
    result[FEAST_TIMESTAMP] = pd.to_datetime(result[FEAST_TIMESTAMP], utc=True)
    return result


def historical_features(store: Any, service: str, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time-correct features for every entity row (labels pass through)."""
    feature_service = store.get_feature_service(service)
    job = store.get_historical_features(entity_df=entities, features=feature_service)
    frame: pd.DataFrame = job.to_df()
    return frame


def required_entity_columns(join_keys: Sequence[str], timestamp_column: str, label: str) -> list[str]:
    return [*join_keys, timestamp_column, label]
