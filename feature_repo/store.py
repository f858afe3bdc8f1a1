"""Helpers around the churn feature repo for the training pipeline, the predictor and tests.

- :func:`open_store` — a ``FeatureStore`` for the repo with every local path inside one data dir.
- :func:`apply_repo` — ``feast apply`` done programmatically (``FeatureStore.apply``).
- :func:`materialize_bounded` — materialize into the online store in bounded time windows.
- :func:`historical_features` — point-in-time training data for an entity/label frame and a
  feature service; :func:`feature_names` gives the service's feature columns in order.
- :func:`online_features` — online feature values for some customers.

The data directory is ``$SLIPWAY_FEAST_DATA`` when set, else ``feature_repo/data`` (git-ignored).
It holds the parquet sources (written by ``python -m feature_repo.generate``), and with the local
configuration also ``registry.db`` and ``online_store.db``.

Also a small CLI (``python -m feature_repo.store apply|materialize``); see README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, RepoConfig

REPO_DIR = Path(__file__).resolve().parent
DATA_DIR_ENV = "SLIPWAY_FEAST_DATA"
S3_ENDPOINT_ENV = "SLIPWAY_FEAST_S3_ENDPOINT"
FEATURE_SERVICE = "churn_v1"
ENTITY_KEY = "customer_id"
TIMESTAMP = "event_timestamp"
CONFIGS = {"local": "feature_store.yaml", "cluster": "cluster/feature_store.yaml"}
REGISTRY_FILE = "registry.db"
ONLINE_STORE_FILE = "online_store.db"


def default_data_dir(repo_dir: Path | str | None = None) -> str:
    """``$SLIPWAY_FEAST_DATA`` if set, else ``<repo_dir>/data`` (``repo_dir`` defaults to this package)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return env
    return str(Path(repo_dir or REPO_DIR).resolve() / "data")


def _is_uri(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _local(text: str) -> Path:
    return Path(text[len("file://") :] if text.startswith("file://") else text).expanduser().resolve()


def _config_file(repo_dir: Path, config: str | Path) -> Path:
    name = CONFIGS.get(str(config))
    path = repo_dir / name if name else Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"no Feast configuration at {path}")
    return path


def load_config(
    repo_dir: Path | str | None = None,
    data_dir: Path | str | None = None,
    config: str | Path = "local",
) -> RepoConfig:
    """The repo's ``RepoConfig`` (``config``: ``"local"``, ``"cluster"`` or a yaml path).

    Environment variables in the yaml are expanded, as Feast does. With a local data directory,
    a relative registry path and a relative SQLite path are moved into it (absolute paths), so the
    store works whatever the current directory and wherever the repo was copied.
    """
    from feast import RepoConfig

    repo = Path(repo_dir or REPO_DIR).resolve()
    data = str(data_dir) if data_dir is not None else default_data_dir(repo)
    with open(_config_file(repo, config)) as fh:
        raw: dict[str, Any] = yaml.safe_load(os.path.expandvars(fh.read()))
    if not _is_uri(data):
        local = _local(data)
        registry = raw.get("registry")
        if isinstance(registry, str):
            registry = {"path": registry}
        if isinstance(registry, dict) and not _is_uri(registry["path"]) and not Path(registry["path"]).is_absolute():
            registry["path"] = str(local / REGISTRY_FILE)
            raw["registry"] = registry
        online = raw.get("online_store")
        if (
            isinstance(online, dict)
            and online.get("type", "sqlite") == "sqlite"
            and not Path(online.get("path", "data/online.db")).is_absolute()
        ):
            online["path"] = str(local / ONLINE_STORE_FILE)
        local.mkdir(parents=True, exist_ok=True)
    repo_config = RepoConfig(**raw)
    repo_config.repo_path = repo
    return repo_config


def open_store(
    repo_dir: Path | str | None = None,
    data_dir: Path | str | None = None,
    config: str | Path = "local",
) -> FeatureStore:
    """A ``FeatureStore`` for the repo at ``repo_dir`` (default: this package) using ``data_dir``."""
    from feast import FeatureStore

    repo = Path(repo_dir or REPO_DIR).resolve()
    return FeatureStore(repo_path=str(repo), config=load_config(repo, data_dir, config))


def _load_definitions_module(repo_dir: Path) -> ModuleType:
    """Import ``<repo_dir>/features.py`` under a private name, afresh on every call."""
    path = repo_dir / "features.py"
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"_slipway_feature_defs_{digest}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import Feast definitions from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return module


def apply_repo(
    repo_dir: Path | str | None = None,
    data_dir: Path | str | None = None,
    config: str | Path = "local",
) -> FeatureStore:
    """Register the repo's objects (entity, views, on-demand view, ``churn_v1``) and return the store.

    The definitions come from ``<repo_dir>/features.py`` built by its ``definitions(data_dir)``, so
    the FileSources point into ``data_dir``: absolute paths for a local directory, URIs for an
    object store. Equivalent to ``feast apply`` for this repo (objects are upserted; objects
    removed from features.py are not deleted from an existing registry). Idempotent.
    """
    from feast import Project

    repo = Path(repo_dir or REPO_DIR).resolve()
    data = str(data_dir) if data_dir is not None else default_data_dir(repo)
    store = open_store(repo, data, config)
    module = _load_definitions_module(repo)
    defs = module.definitions(data, os.environ.get(S3_ENDPOINT_ENV) or None)
    store.apply([Project(name=store.project), *defs.objects()])
    return store


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def windows(start: datetime, end: datetime, window: timedelta) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut into consecutive windows of at most ``window`` (naive times are UTC)."""
    if window <= timedelta(0):
        raise ValueError("window must be positive")
    start, end = _utc(start), _utc(end)
    result = []
    lo = start
    while lo < end:
        hi = min(lo + window, end)
        result.append((lo, hi))
        lo = hi
    return result


def materialize_bounded(
    store: FeatureStore,
    start: datetime,
    end: datetime,
    window: timedelta = timedelta(days=7),
    feature_views: Sequence[str] | None = None,
) -> list[tuple[datetime, datetime]]:
    """Materialize ``[start, end)`` into the online store one window at a time, oldest first.

    Each ``store.materialize`` call reads only one window of source rows, so memory stays bounded
    however long the range is (Feast materializing a large range at once can run out of memory).
    Windows go in time order, so the online store ends with each entity's latest row. Returns the
    windows done.
    """
    done = []
    views = list(feature_views) if feature_views is not None else None
    for lo, hi in windows(start, end, window):
        store.materialize(start_date=lo, end_date=hi, feature_views=views)
        done.append((lo, hi))
    return done


def read_entities(source: pd.DataFrame | str | Path, timestamp_column: str = TIMESTAMP) -> pd.DataFrame:
    """An entity/label frame from a DataFrame or a parquet path/URI (``file://``, ``s3://`` via fsspec).

    The timestamp column is renamed to ``event_timestamp`` and made timezone-aware (UTC).
    """
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
    else:
        text = str(source)
        frame = pd.read_parquet(text[len("file://") :] if text.startswith("file://") else text)
    if timestamp_column != TIMESTAMP:
        frame = frame.rename(columns={timestamp_column: TIMESTAMP})
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


def feature_service(store: FeatureStore, name: str = FEATURE_SERVICE) -> FeatureService:
    """The feature service ``name`` from the registry (raises ``FeatureServiceNotFoundException``)."""
    return store.get_feature_service(name)


def _view_name(projection: Any) -> str:
    """The projection's view name (Feast leaves `name_to_use` untyped)."""
    return str(projection.name_to_use())


def feature_names(store: FeatureStore, name: str = FEATURE_SERVICE, full: bool = False) -> list[str]:
    """The service's feature columns in order (``view__feature`` when ``full``)."""
    service = feature_service(store, name)
    return [
        f"{_view_name(projection)}__{feat.name}" if full else feat.name
        for projection in service.feature_view_projections
        for feat in projection.features
    ]


def feature_refs(store: FeatureStore, name: str = FEATURE_SERVICE) -> list[str]:
    """The service's features as ``view:feature`` references, in order."""
    service = feature_service(store, name)
    return [
        f"{_view_name(projection)}:{feat.name}"
        for projection in service.feature_view_projections
        for feat in projection.features
    ]


def feature_views(store: FeatureStore, name: str = FEATURE_SERVICE) -> list[str]:
    """Names of the feature views (batch and on-demand) the service reads, in order (for lineage)."""
    return [projection.name for projection in feature_service(store, name).feature_view_projections]


def _integer_features(store: FeatureStore, name: str, full: bool) -> list[str]:
    """The service's feature columns whose Feast type is an integer."""
    from feast.types import Int32, Int64

    return [
        f"{_view_name(projection)}__{feat.name}" if full else feat.name
        for projection in feature_service(store, name).feature_view_projections
        for feat in projection.features
        if feat.dtype in (Int32, Int64)
    ]


def historical_features(
    store: FeatureStore,
    entities: pd.DataFrame | str | Path,
    name: str = FEATURE_SERVICE,
    timestamp_column: str = TIMESTAMP,
    full_feature_names: bool = False,
) -> pd.DataFrame:
    """Point-in-time-correct features of the service ``name``: exactly one row per entity row.

    ``entities`` (a frame or a parquet path/URI) has ``customer_id``, the timestamp column and any
    other columns (labels), which are kept. Each feature is the value of the latest source row at or
    before the row's timestamp, within the view's TTL; otherwise it is missing (NaN, or ``<NA>`` in
    an integer column, which is then pandas' nullable ``Int64``). Columns: the entity frame's, then
    :func:`feature_names` in order. Rows are sorted by ``customer_id`` and ``event_timestamp``
    (stable) with a fresh index, so the result is deterministic.

    Feast's file (dask) offline store drops entity rows whose customer has source rows but none in
    the TTL window at or before the timestamp, and collapses rows that share customer and timestamp
    (feast-dev/feast#6787). So Feast is asked about each distinct (customer, timestamp) once and its
    answer is joined back onto every entity row: nothing is dropped, nothing is merged.
    """
    entity_df = read_entities(entities, timestamp_column)
    entity_df[TIMESTAMP] = entity_df[TIMESTAMP].astype("datetime64[ns, UTC]")
    keys = [ENTITY_KEY, TIMESTAMP]
    requests = entity_df[keys].drop_duplicates().reset_index(drop=True)
    job = store.get_historical_features(
        entity_df=requests,
        features=feature_service(store, name),
        full_feature_names=full_feature_names,
    )
    found = job.to_df()
    found[TIMESTAMP] = pd.to_datetime(found[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    columns = feature_names(store, name, full=full_feature_names)
    found = found[[*keys, *columns]].drop_duplicates(keys)
    integers = _integer_features(store, name, full_feature_names)
    found = found.astype(dict.fromkeys(integers, "Int64"))  # Feast gives float64 when one is missing
    frame = entity_df.merge(found, on=keys, how="left", validate="many_to_one")
    complete = [c for c in integers if not frame[c].isna().any()]
    frame = frame.astype(dict.fromkeys(complete, "int64"))
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def online_features(
    store: FeatureStore,
    customer_ids: Iterable[int],
    name: str = FEATURE_SERVICE,
) -> pd.DataFrame:
    """Online feature values of the service for some customers (one row per id, in order)."""
    rows = [{ENTITY_KEY: int(cid)} for cid in customer_ids]
    response = store.get_online_features(features=feature_service(store, name), entity_rows=rows)
    return response.to_df()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feature_repo.store", description="Apply or materialize the repo.")
    parser.add_argument("command", choices=["apply", "materialize"])
    parser.add_argument("--repo", default=str(REPO_DIR), help="feature repo directory (default: this package)")
    parser.add_argument("--data", default=None, help=f"data directory (default: ${DATA_DIR_ENV} or <repo>/data)")
    parser.add_argument("--config", default="local", help="local, cluster, or a feature_store.yaml path")
    parser.add_argument("--start", help="materialize from (ISO time, UTC)")
    parser.add_argument("--end", help="materialize until (ISO time, UTC; default now)")
    parser.add_argument("--window-days", type=float, default=7.0, help="materialization window in days")
    args = parser.parse_args(argv)
    if args.command == "apply":
        store = apply_repo(args.repo, args.data, args.config)
        print(f"applied project {store.project}: {', '.join(feature_refs(store))}")
        return 0
    if not args.start:
        parser.error("materialize needs --start")
    store = open_store(args.repo, args.data, args.config)
    end = datetime.fromisoformat(args.end) if args.end else datetime.now(UTC)
    done = materialize_bounded(store, datetime.fromisoformat(args.start), end, timedelta(days=args.window_days))
    print(f"materialized {len(done)} windows from {done[0][0] if done else '-'} to {end}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
