"""The batch prediction job's pure parts: its configuration, the scoring frame, the scoring of a
batch (the predictor's forward pass), the output directory and the user errors, without Ray or Feast."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pipelines.batch import config, job, join, output, score
from pipelines.churn import failures, sources
from pipelines.churn.config import Runtime
from pipelines.predictor import artifact
from pipelines.predictor.instances import Schema, parse_instances
from pipelines.predictor.scorer import LocalCompute

from slipway.api.artifacts import EXIT_CONFIG, RunFailure
from slipway.api.batchprediction import (
    BATCH_CONFIG_ENV,
    BATCH_FAILURE_FILE,
    BATCH_MANIFEST_FILE,
    PREDICTION_COLUMN,
    RUN_COLUMN,
    VERSION_COLUMN,
)
from tests.support import write_model_run

FEATURES = ("sessions_30d", "monthly_charges", "tenure_months")
SERVICE = sources.FeatureServiceInfo(
    name="churn_v1", features=list(FEATURES), feature_views=["customer_activity"], join_keys=["customer_id"]
)


def document(tmp_path: Path, **spec: Any) -> dict[str, Any]:
    return {
        "name": "bp-1",
        "namespace": "ml",
        "attempt": 1,
        "spec": {
            "model": "churn",
            "input": {"uri": "file:///d/entities.parquet", "timestampColumn": "scored_at"},
            "output": {"uri": (tmp_path / "out").as_uri() + "/"},
            "scaling": {"workers": 3, "gpusPerWorker": 1, "batchSize": 100},
            **spec,
        },
        "modelVersion": {"name": "churn-v4", "version": 4, "uri": "s3://models/churn/runs/r/", "featureService": "s1"},
    }


def test_the_configuration_is_the_operators_json_and_trainings_environment(tmp_path: Path) -> None:
    env = {
        BATCH_CONFIG_ENV: json.dumps(document(tmp_path)),
        "SLIPWAY_FEATURE_REPO": "/repo",
        "SLIPWAY_FEAST_CONFIG": "cluster",
        "SLIPWAY_RAY_NUM_CPUS": "6",
        "SLIPWAY_PVC_ROOT": "/pvc",
    }
    cfg = config.load(env)
    assert (cfg.job.name, cfg.job.attempt, cfg.job.model_version.version) == ("bp-1", 1, 4)
    assert cfg.job.spec.input.timestamp_column == "scored_at" and cfg.job.spec.scaling.batch_size == 100
    assert cfg.runtime == Runtime("/repo", "cluster", 6.0, "/pvc")
    assert cfg.device == "cuda"
    assert config.load({BATCH_CONFIG_ENV: json.dumps(document(tmp_path, scaling={"workers": 1}))}).device == "cpu"


@pytest.mark.parametrize("raw", [None, "", "{not json", json.dumps({"name": "bp-1"})])
def test_no_or_a_bad_configuration_exits_2(raw: str | None) -> None:
    assert job.main({} if raw is None else {BATCH_CONFIG_ENV: raw}) == EXIT_CONFIG


@pytest.mark.parametrize(
    ("rows", "workers", "batch", "expected"),
    [(0, 2, 10, 1), (5, 2, 10, 1), (1000, 2, 100, 8), (1000, 2, 400, 3), (10**6, 4, 4096, 16), (10, 1, 1, 4)],
)
def test_blocks_are_a_few_per_worker_and_never_smaller_than_a_batch(
    rows: int, workers: int, batch: int, expected: int
) -> None:
    assert job.blocks(rows, workers, batch) == expected


def test_features_are_float32_in_the_manifests_order_nan_where_missing() -> None:
    joined = pd.DataFrame(
        {
            "monthly_charges": [70.5, None],
            "sessions_30d": pd.array([3, None], dtype="Int64"),
            "unused": [1, 2],
        }
    )
    frame = join.features_frame(joined, ["sessions_30d", "monthly_charges", "not_served"], 2)
    assert list(frame.columns) == join.feature_columns(3)
    assert frame.dtypes.tolist() == [np.float32] * 3
    expected = np.array([[3, 70.5, np.nan], [np.nan, np.nan, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(frame.to_numpy(), expected)


class Store:
    """Feast's FeatureStore as far as the join goes: features by (customer, time), at most one answer
    for each distinct pair (as Feast's file store answers)."""

    def __init__(self, values: dict[tuple[int, str], list[float]]) -> None:
        self.values = values
        self.requests: list[pd.DataFrame] = []

    def get_feature_service(self, name: str) -> str:
        return name

    def get_historical_features(self, entity_df: pd.DataFrame, features: str) -> Any:
        self.requests.append(entity_df.copy())
        rows = []
        for customer, at in zip(entity_df["customer_id"], entity_df["event_timestamp"], strict=True):
            found = self.values.get((customer, at.isoformat()))
            if found is not None:  # Feast's file store drops an entity row it has nothing for
                rows.append({"customer_id": customer, "event_timestamp": at, **dict(zip(FEATURES, found, strict=True))})
        frame = pd.DataFrame(rows, columns=["customer_id", "event_timestamp", *FEATURES])
        return type("Job", (), {"to_df": lambda self: frame})()


def test_the_scoring_frame_keeps_every_input_row_and_column_in_order() -> None:
    t1, t2 = "2025-05-01T00:00:00+00:00", "2025-06-01T00:00:00+00:00"
    store = Store({(1, t1): [1, 10.0, 3], (2, t2): [2, 20.0, 4]})
    entities = pd.DataFrame(
        {
            "scored_at": pd.to_datetime([t2, t1, t2, t1, t2]),
            "customer_id": [2, 1, 2, 9, 1],
            "segment": ["a", "b", "c", "d", "e"],
            "monthly_charges": [0.0] * 5,  # an input column named like a feature: kept, and not used
        }
    )
    frame = join.scoring_frame(store, entities, SERVICE, "scored_at", FEATURES)
    assert list(frame.columns[:4]) == ["scored_at", "customer_id", "segment", "monthly_charges"]
    assert frame["segment"].tolist() == ["a", "b", "c", "d", "e"]
    values = frame[join.feature_columns(3)].to_numpy()
    np.testing.assert_array_equal(values[[0, 1, 2]], [[2, 20, 4], [1, 10, 3], [2, 20, 4]])
    assert np.isnan(values[[3, 4]]).all()  # unknown customer; a time the store has nothing for
    assert len(store.requests) == 1 and len(store.requests[0]) == 4  # each distinct (key, time) once


def test_an_empty_batch_is_an_empty_answer(tmp_path: Path) -> None:
    run = write_model_run(tmp_path / "run", features=FEATURES)
    scorer = score.Scorer(str(run), join.feature_columns(3), version=1, run="bp-1")
    empty = pa.table(
        {"customer_id": pa.array([], pa.int64()), **{c: pa.array([], pa.float32()) for c in join.feature_columns(3)}}
    )
    assert scorer(empty).column_names == ["customer_id", PREDICTION_COLUMN, VERSION_COLUMN, RUN_COLUMN]


def test_an_empty_input_scores_nothing() -> None:
    entities = pd.DataFrame({"customer_id": pd.Series([], dtype="int64"), "scored_at": pd.to_datetime([])})
    store = Store({})
    frame = join.scoring_frame(store, entities, SERVICE, "scored_at", FEATURES)
    assert len(frame) == 0 and not store.requests


@pytest.mark.parametrize(
    ("columns", "field", "value"),
    [
        (["customer_id", "event_timestamp"], "spec.input.timestampColumn", "scored_at"),
        (["customer_id"], "spec.input.timestampColumn", "scored_at"),
        (["scored_at", "churned"], "spec.input.uri", "file:///in.parquet"),
    ],
)
def test_a_missing_column_names_the_batch_field(columns: list[str], field: str, value: str) -> None:
    entities = sources.EntityDataset(pd.DataFrame({c: [1] for c in columns}), "file:///in.parquet", "")
    with pytest.raises(failures.ColumnNotFound) as missing:
        join.check_input(entities, SERVICE, "scored_at")
    assert (missing.value.field, missing.value.value) == (field, value)
    join.check_input(
        sources.EntityDataset(pd.DataFrame({"customer_id": [1], "scored_at": [1]}), "u", ""), SERVICE, "scored_at"
    )


def test_the_input_and_the_feature_service_errors_name_the_batch_fields(tmp_path: Path) -> None:
    with pytest.raises(failures.DatasetNotFound) as missing:
        sources.read_entities((tmp_path / "nope.parquet").as_uri(), fields=config.FIELDS)
    assert missing.value.field == "spec.input.uri"
    frame = pd.DataFrame({"customer_id": [1], "ts": ["yesterday"]})
    with pytest.raises(failures.ColumnNotFound, match="is not a column of times") as bad:
        join.check_input(sources.EntityDataset(frame, "u", ""), SERVICE, "ts")
    assert (bad.value.field, bad.value.value) == ("spec.input.timestampColumn", "ts")


def test_a_batch_is_scored_exactly_as_the_predictor_scores_the_same_features(tmp_path: Path) -> None:
    """Arrow batches, as Ray Data hands them to the actors; the model's own answer for each row."""
    run = write_model_run(tmp_path / "run", seed=3, features=FEATURES)
    scorer = score.Scorer(str(run), join.feature_columns(3), version=4, run="bp-1")
    rows = np.array([[3, 70.5, 12], [np.nan, 20.0, np.nan], [0, 0, 0]], dtype=np.float32)
    batch = pd.concat(
        [pd.DataFrame({"customer_id": [1, 2, 3]}), pd.DataFrame(rows, columns=join.feature_columns(3))], axis=1
    )
    out = scorer(pa.Table.from_pandas(batch, preserve_index=False)).to_pandas()  # NaN -> null on the way
    assert list(out.columns) == ["customer_id", PREDICTION_COLUMN, VERSION_COLUMN, RUN_COLUMN]
    assert out[VERSION_COLUMN].tolist() == [4, 4, 4] and out[RUN_COLUMN].tolist() == ["bp-1"] * 3

    # The predictor: the same run directory, v1 instances (null = missing), its own forward pass.
    loaded = artifact.load(str(run))
    instances = parse_instances(
        [{name: (None if np.isnan(v) else float(v)) for name, v in zip(FEATURES, row, strict=True)} for row in rows],
        Schema(FEATURES),
    )
    online = asyncio.run(LocalCompute(loaded.model, 3)(instances.values, instances.keys))
    np.testing.assert_array_equal(out[PREDICTION_COLUMN].to_numpy(), online.probabilities)
    assert out[PREDICTION_COLUMN].dtype == np.float32


def test_a_model_of_other_features_is_refused(tmp_path: Path) -> None:
    run = write_model_run(tmp_path / "run", features=FEATURES[:2])
    with pytest.raises(ValueError, match="3 feature columns for a model of 2"):
        score.Scorer(str(run), join.feature_columns(3), version=1, run="bp-1")


def test_an_earlier_attempts_output_is_removed_and_only_parquet_files_count(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pd.DataFrame({"a": [1, 2, 3]}).to_parquet(out / "old-0.parquet")
    for name in (BATCH_MANIFEST_FILE, BATCH_FAILURE_FILE, "README"):
        (out / name).write_text("{}")
    output.prepare(out.as_uri(), "file:///out/")
    assert sorted(p.name for p in out.iterdir()) == ["README"]
    pd.DataFrame({"a": [1, 2, 3]}).to_parquet(out / "b.parquet")
    pd.DataFrame({"a": [4]}).to_parquet(out / "a.parquet")
    files = output.parquet_files(out.as_uri())
    assert files == ["a.parquet", "b.parquet"] and output.count_rows(out.as_uri(), files) == 4
    assert output.parquet_files((tmp_path / "none").as_uri()) == []


def test_an_unwritable_output_names_spec_output_uri(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(failures.ArtifactsUnwritable) as refused:
        output.prepare((tmp_path / "file" / "out").as_uri(), "pvc://data/file/out/")
    assert (refused.value.field, refused.value.value) == ("spec.output.uri", "pvc://data/file/out/")


def test_a_user_error_becomes_failure_json_in_the_output(tmp_path: Path) -> None:
    cfg = config.load({BATCH_CONFIG_ENV: json.dumps(document(tmp_path))})
    assert job.run(cfg) == failures.DatasetNotFound.exit_code  # file:///d/entities.parquet is not there
    failure = RunFailure.model_validate_json((tmp_path / "out" / BATCH_FAILURE_FILE).read_text())
    assert (failure.reason, failure.field, failure.attempt) == ("DatasetNotFound", "spec.input.uri", 1)
    assert not (tmp_path / "out" / BATCH_MANIFEST_FILE).exists()
