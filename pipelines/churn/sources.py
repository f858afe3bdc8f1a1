"""An entity dataset (through fsspec) joined point in time with a Feast feature service's features.

Training (`pipelines.churn.train`) and batch prediction (`pipelines.batch`) read their data through
the same functions, so a model scores rows joined exactly as the rows it was trained on. A dataset,
feature service or column the job names but that is not there raises the matching
`failures.UserError`, naming the spec field (`Fields`: the training's or the batch prediction's);
a fault of the storage or the registry propagates.
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


@dataclass(frozen=True)
class Fields:
    """The spec fields a user error names: the entity dataset, the feature service, the timestamp
    column and (training only) the label."""

    dataset: str
    service: str
    timestamp: str
    label: str | None = None


TRAINING = Fields(DATASET_FIELD, SERVICE_FIELD, TIMESTAMP_FIELD, LABEL_FIELD)


def read_entities(uri: str, pvc_root: str = "/mnt/pvc", fields: Fields = TRAINING) -> EntityDataset:
    """The entity parquet file and the sha256 of its bytes."""
    try:
        data = storage.read_bytes(storage.resolve(uri, pvc_root))
    except FileNotFoundError as error:
        raise DatasetNotFound(fields.dataset, uri, "no such file") from error
    except (OSError, ValueError, ImportError) as error:
        if not permanent(error):
            raise  # the store had a bad moment: a retry may read it
        raise DatasetNotFound(fields.dataset, uri, f"cannot be read: {first_line(error)}") from error
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as error:  # the bytes are here: reading them fails the same way every time
        detail = f"is not a readable parquet file: {first_line(error)}"
        raise DatasetNotFound(fields.dataset, uri, detail) from error
    return EntityDataset(frame=frame, uri=uri, sha256=hashlib.sha256(data).hexdigest())


def open_store(repo_path: str, config: str = "local") -> Any:
    """The Feast store of a repository, through feature_repo.store (which places the registry and
    the sources in $SLIPWAY_FEAST_DATA); `config` is "local", "cluster" or a feature_store.yaml."""
    from feature_repo.store import open_store as open_feature_store

    return open_feature_store(repo_dir=repo_path, config=config)


def describe_service(store: Any, name: str, fields: Fields = TRAINING) -> FeatureServiceInfo:
    """Features (in order), feature views and join keys of a Feast feature service."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        service = store.get_feature_service(name)
    except FeatureServiceNotFoundException as error:
        there = sorted(s.name for s in store.list_feature_services())
        detail = f"no such feature service in the Feast registry (it has: {listing(there)})"
        raise FeatureServiceNotFound(fields.service, name, detail) from error
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


def entity_dataframe(frame: pd.DataFrame, timestamp_column: str, fields: Fields = TRAINING) -> pd.DataFrame:
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
        raise DataValidationFailed(fields.timestamp, timestamp_column, report) from error
    return result


def historical_features(store: Any, service: FeatureServiceInfo, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time-correct features for every entity row, in the entities' order: the entity
    frame's columns (labels pass through), then the service's features.

    Feast is asked about each distinct (join keys, event time) once and its answer is joined back
    onto every row: its file offline store drops rows whose entity has no source row in the TTL
    window and merges rows that share keys and time (feast-dev/feast#6787, as `feature_repo.store`
    says), so no row is lost or merged here; a row without features gets NaN (imputed by the model).
    """
    keys = [*service.join_keys, FEAST_TIMESTAMP]
    frame = entities.reset_index(drop=True)
    frame[FEAST_TIMESTAMP] = _utc_ns(frame[FEAST_TIMESTAMP])
    requests = frame[keys].drop_duplicates().reset_index(drop=True)
    job = store.get_historical_features(entity_df=requests, features=store.get_feature_service(service.name))
    found: pd.DataFrame = job.to_df()
    found[FEAST_TIMESTAMP] = _utc_ns(found[FEAST_TIMESTAMP])
    features = [f for f in service.features if f in found.columns]
    found = found[[*keys, *features]].drop_duplicates(keys)
    for key in service.join_keys:  # Feast may widen an integer key; the entity's dtype decides
        if found[key].dtype != frame[key].dtype:
            found[key] = found[key].astype(frame[key].dtype)
    joined = frame.drop(columns=[f for f in features if f in frame.columns]).merge(
        found, on=keys, how="left", validate="many_to_one"
    )
    return joined


def _utc_ns(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column, utc=True).astype("datetime64[ns, UTC]")


def check_columns(
    entities: EntityDataset,
    service: FeatureServiceInfo,
    timestamp_column: str,
    label: str | None,
    fields: Fields = TRAINING,
) -> None:
    """The label (training), the timestamp column and the service's entity keys must be columns of
    the entity dataset. The label's or timestamp's field is named first (a typo there is likelier
    than data without its keys); the message lists every column missing and those there are."""
    columns = [str(c) for c in entities.frame.columns]
    keys = [k for k in service.join_keys if k not in columns]
    wanted = [(timestamp_column, fields.timestamp)]
    if label is not None and fields.label is not None:
        wanted.append((label, fields.label))
    named = [(c, f) for c, f in wanted if c not in columns]
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
    raise ColumnNotFound(fields.dataset, entities.uri, detail)
