"""Training data: the entity/label dataset (through fsspec) joined point in time with Feast features.

A dataset, feature service or column the run names but that is not there raises the matching
`failures.UserError`, naming the spec field; a fault of the storage or the registry propagates.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import pandas as pd

from slipway.api.artifacts import ValidationFailure, ValidationReport

from . import storage, validation
from .failures import (
    ColumnNotFound,
    DatasetNotFound,
    DataValidationFailed,
    FeatureServiceNotFound,
    first_line,
    listing,
    permanent,
)

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


DATASET_FIELD = "spec.features.entities.uri"
SERVICE_FIELD = "spec.features.featureService"
LABEL_FIELD = "spec.features.label"
TIMESTAMP_FIELD = "spec.features.entities.timestampColumn"


def read_entities(uri: str, pvc_root: str = "/mnt/pvc") -> EntityDataset:
    """The entity/label parquet file and the sha256 of its bytes."""
    try:
        data = storage.read_bytes(storage.resolve(uri, pvc_root))
    except FileNotFoundError as error:
        raise DatasetNotFound(DATASET_FIELD, uri, "no such file") from error
    except (OSError, ValueError, ImportError) as error:
        if not permanent(error):
            raise  # the store had a bad moment: a retry may read it
        raise DatasetNotFound(DATASET_FIELD, uri, f"cannot be read: {first_line(error)}") from error
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as error:  # the bytes are here: reading them fails the same way every time
        raise DatasetNotFound(DATASET_FIELD, uri, f"is not a readable parquet file: {first_line(error)}") from error
    return EntityDataset(frame=frame, uri=uri, sha256=hashlib.sha256(data).hexdigest())


def open_store(repo_path: str, config: str = "local") -> Any:
    """The Feast store of a repository, through feature_repo.store (which places the registry and
    the sources in $SLIPWAY_FEAST_DATA); `config` is "local", "cluster" or a feature_store.yaml."""
    from feature_repo.store import open_store as open_feature_store

    return open_feature_store(repo_dir=repo_path, config=config)


def describe_service(store: Any, name: str) -> FeatureServiceInfo:
    """Features (in order), feature views and join keys of a Feast feature service."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        service = store.get_feature_service(name)
    except FeatureServiceNotFoundException as error:
        there = sorted(s.name for s in store.list_feature_services())
        detail = f"no such feature service in the Feast registry (it has: {listing(there)})"
        raise FeatureServiceNotFound(SERVICE_FIELD, name, detail) from error
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
    """The entity dataset as Feast wants it: the event time in `event_timestamp`, as UTC datetimes.

    A timestamp column whose values are not times fails validation (DataValidationFailed)."""
    result = frame.copy()
    if timestamp_column != FEAST_TIMESTAMP:
        result = result.drop(columns=[FEAST_TIMESTAMP], errors="ignore").rename(
            columns={timestamp_column: FEAST_TIMESTAMP}
        )
    try:
        result[FEAST_TIMESTAMP] = pd.to_datetime(result[FEAST_TIMESTAMP], utc=True)
    except (ValueError, TypeError, OverflowError) as error:
        dtype = str(frame[timestamp_column].dtype)
        failures = [ValidationFailure(feature=timestamp_column, check=validation.TYPE, value=dtype, limit="timestamps")]
        report = ValidationReport(passed=False, reason=validation.reason(failures), failures=failures, rows=len(frame))
        raise DataValidationFailed(TIMESTAMP_FIELD, timestamp_column, report) from error
    return result


def historical_features(store: Any, service: str, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time-correct features for every entity row (labels pass through)."""
    feature_service = store.get_feature_service(service)
    job = store.get_historical_features(entity_df=entities, features=feature_service)
    frame: pd.DataFrame = job.to_df()
    return frame


def check_columns(entities: EntityDataset, service: FeatureServiceInfo, timestamp_column: str, label: str) -> None:
    """The label, the timestamp column and the service's entity keys must be columns of the entity
    dataset. The label's or timestamp's field is named first (a typo there is likelier than data
    without its keys); the message lists every column missing and those there are."""
    columns = [str(c) for c in entities.frame.columns]
    keys = [k for k in service.join_keys if k not in columns]
    named = [(c, f) for c, f in ((timestamp_column, TIMESTAMP_FIELD), (label, LABEL_FIELD)) if c not in columns]
    if not keys and not named:
        return
    missing = [c for c, _ in named] + keys
    also = f"; also missing: {listing(missing[1:])}" if len(missing) > 1 else ""
    there = f"; it has: {listing(columns)}"
    if named:
        column, field = named[0]
        detail = f"not a column of the entity dataset {entities.uri}{also}{there}"
        raise ColumnNotFound(field, column, detail)
    detail = f"has no column {keys[0]!r}, the entity key of feature service {service.name}{also}{there}"
    raise ColumnNotFound(DATASET_FIELD, entities.uri, detail)
