"""The batch prediction job end to end: `python -m pipelines.batch` as the RayJob runs it, with a
real local Ray (started by the job, as without RAY_ADDRESS) and the real Feast repository on
generated data; its output checked row by row against the online predictor's scoring of the same
feature rows. The user errors, which all come before Ray, run the entrypoint's main in process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from slipway.api.artifacts import (
    EXIT_ARTIFACTS_UNWRITABLE,
    EXIT_COLUMN_NOT_FOUND,
    EXIT_DATASET_NOT_FOUND,
    EXIT_FEATURE_SERVICE_NOT_FOUND,
    RunFailure,
)
from slipway.api.batchprediction import (
    BATCH_CONFIG_ENV,
    BATCH_FAILURE_FILE,
    BATCH_MANIFEST_FILE,
    PREDICTION_COLUMN,
    RUN_COLUMN,
    VERSION_COLUMN,
    BatchManifest,
)
from tests.integration.test_pipeline_train import Case, _set, _under_a_file, feast_data, reported
from tests.support import write_standardized_run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TIMESTAMP = "scored_at"  # not Feast's event_timestamp: the job renames it for the join, and keeps it


@dataclass
class Job:
    returncode: int
    output: str
    seconds: float
    out: Path

    def manifest(self) -> BatchManifest:
        return BatchManifest.model_validate_json((self.out / BATCH_MANIFEST_FILE).read_text())

    def predictions(self) -> pd.DataFrame:
        files = self.manifest().files
        return pd.concat([pd.read_parquet(self.out / name) for name in files], ignore_index=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return feast_data(tmp_path_factory.mktemp("feast-batch"))


@pytest.fixture(scope="module")
def model(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory as training leaves one (TorchScript and manifest), in the service's features."""
    return write_standardized_run(tmp_path_factory.mktemp("model") / "runs" / "churn-a", clean)


@pytest.fixture(scope="module")
def entities(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The labels' customers and times, and the rows the join must not lose: a customer the store
    does not know, a row repeated, a time before any feature row, a time past every view's TTL."""
    labels = pd.read_parquet(clean / "labels.parquet").drop(columns=["churned"])
    first = labels.iloc[0]
    extra = pd.DataFrame(
        {
            "customer_id": [999_999, first["customer_id"], first["customer_id"], first["customer_id"]],
            "event_timestamp": [
                first["event_timestamp"],
                first["event_timestamp"],
                pd.Timestamp("2024-06-01", tz="UTC"),
                pd.Timestamp("2027-01-01", tz="UTC"),
            ],
        }
    )
    frame = pd.concat([labels, extra], ignore_index=True).rename(columns={"event_timestamp": TIMESTAMP})
    frame.insert(0, "row", np.arange(len(frame)))
    frame["segment"] = [f"s{i % 7}" for i in range(len(frame))]
    path = tmp_path_factory.mktemp("input") / "entities.parquet"
    frame.to_parquet(path)
    return path


def document(name: str, entities: Path, out: Path, model: Path, attempt: int = 0, **spec: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "ml",
        "attempt": attempt,
        "spec": {
            "model": "churn",
            "input": {"uri": entities.as_uri(), "timestampColumn": TIMESTAMP},
            "output": {"uri": out.as_uri() + "/"},
            "scaling": {"workers": 2, "cpusPerWorker": 1, "batchSize": 128},
            **spec,
        },
        "modelVersion": {"name": "churn-v3", "version": 3, "uri": model.as_uri(), "featureService": "churn_v1"},
    }


def run_job(doc: dict[str, Any], clean: Path) -> Job:
    env = {
        **{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},  # the job starts its own Ray
        BATCH_CONFIG_ENV: json.dumps(doc),
        "SLIPWAY_FEAST_DATA": str(clean),
        "PYTHONPATH": str(REPO),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.batch"], cwd=REPO, env=env, capture_output=True, text=True, timeout=400
    )
    out = Path(doc["spec"]["output"]["uri"].removeprefix("file://"))
    return Job(done.returncode, done.stdout + done.stderr, time.monotonic() - started, out)


def predictor_answers(clean: Path, model: Path, entities: pd.DataFrame) -> np.ndarray:
    """What the online predictor answers for the same feature rows: the features as of each row's
    time (the feature repository's own point-in-time helper, not the job's), sent as v1 instances
    (null where missing) through the predictor's parsing and forward pass."""
    from feature_repo.store import historical_features, open_store
    from pipelines.predictor import artifact
    from pipelines.predictor.instances import Schema, parse_instances
    from pipelines.predictor.scorer import LocalCompute

    loaded = artifact.load(str(model))
    features = tuple(loaded.manifest.features)
    frame = historical_features(open_store(data_dir=str(clean)), entities, timestamp_column=TIMESTAMP)
    frame = frame.set_index("row").loc[entities["row"]]
    instances = [
        {name: (None if pd.isna(value) else float(value)) for name, value in zip(features, values, strict=True)}
        for values in frame[list(features)].itertuples(index=False)
    ]
    parsed = parse_instances(instances, Schema(features, max_rows=len(instances)))
    computed = asyncio.run(LocalCompute(loaded.model, len(features))(parsed.values, parsed.keys))
    probabilities: np.ndarray = computed.probabilities
    return probabilities


@pytest.fixture(scope="module")
def first(clean: Path, model: Path, entities: Path, tmp_path_factory: pytest.TempPathFactory) -> Job:
    out = tmp_path_factory.mktemp("predictions") / "out"
    job = run_job(document("bp-1", entities, out, model), clean)
    assert job.returncode == 0, job.output[-6000:]
    print(f"batch prediction: {job.seconds:.1f}s")
    return job


def test_every_row_is_scored_as_the_predictor_scores_it(first: Job, clean: Path, model: Path, entities: Path) -> None:
    given = pd.read_parquet(entities)
    manifest = first.manifest()
    assert (manifest.batch_prediction, manifest.attempt, manifest.version, manifest.model_version) == (
        "bp-1",
        0,
        3,
        "churn-v3",
    )
    assert manifest.feature_service == "churn_v1" and manifest.input == entities.as_uri()
    assert manifest.rows_read == manifest.rows_written == len(given)
    assert len(manifest.files) > 1 and manifest.seconds > 0
    assert sorted(p.name for p in first.out.iterdir()) == sorted([*manifest.files, BATCH_MANIFEST_FILE])

    got = first.predictions().sort_values("row").reset_index(drop=True)
    assert list(got.columns) == [*given.columns, PREDICTION_COLUMN, VERSION_COLUMN, RUN_COLUMN]
    pd.testing.assert_frame_equal(got[given.columns], given)  # the input's rows and columns, as they were
    assert (got[VERSION_COLUMN] == 3).all() and (got[RUN_COLUMN] == "bp-1").all()

    expected = predictor_answers(clean, model, given)
    np.testing.assert_allclose(got[PREDICTION_COLUMN].to_numpy(), expected, rtol=0, atol=1e-6)
    assert got[PREDICTION_COLUMN].nunique() > len(got) // 2  # answers that differ, so agreeing means something
    unknown, repeated = got.iloc[-4], got.iloc[-3]
    assert unknown["customer_id"] == 999_999 and 0 < unknown[PREDICTION_COLUMN] < 1  # imputed, not dropped
    assert repeated[PREDICTION_COLUMN] == got.iloc[0][PREDICTION_COLUMN]


def test_a_retry_replaces_the_earlier_attempts_output(first: Job, clean: Path, model: Path, entities: Path) -> None:
    before = set(first.manifest().files)
    (first.out / BATCH_FAILURE_FILE).write_text("{}")  # as if an attempt between had failed
    scaling = {"workers": 1, "cpusPerWorker": 1, "batchSize": 1000}
    job = run_job(document("bp-1", entities, first.out, model, attempt=1, scaling=scaling), clean)
    assert job.returncode == 0, job.output[-6000:]
    manifest = job.manifest()
    assert manifest.attempt == 1 and manifest.rows_written == manifest.rows_read
    assert not before & set(manifest.files)
    assert sorted(p.name for p in job.out.iterdir()) == sorted([*manifest.files, BATCH_MANIFEST_FILE])
    assert len(job.predictions()) == manifest.rows_read


def _input(write: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path, Path], str]:
    def make(tmp: Path, entities: Path) -> str:
        target = tmp / "changed.parquet"
        write(pd.read_parquet(entities)).to_parquet(target)
        return target.as_uri()

    return make


def _csv(tmp: Path, entities: Path) -> str:
    (tmp / "entities.csv").write_text("customer_id,scored_at\n1,2025-01-01\n")
    return (tmp / "entities.csv").as_uri()


USER_ERRORS = {
    "feature-service": Case(
        _set("modelVersion.featureService", "churn_v9"),
        EXIT_FEATURE_SERVICE_NOT_FOUND,
        "spec.featureService",
        ['"churn_v9"', "it has: churn_v1"],
    ),
    "dataset-missing": Case(
        _set("spec.input.uri", lambda tmp, entities: (tmp / "nope.parquet").as_uri()),
        EXIT_DATASET_NOT_FOUND,
        "spec.input.uri",
        ["nope.parquet", "no such file"],
    ),
    "dataset-not-parquet": Case(
        _set("spec.input.uri", _csv), EXIT_DATASET_NOT_FOUND, "spec.input.uri", ["is not a readable parquet file"]
    ),
    "timestamp": Case(
        _set("spec.input.timestampColumn", "event_timestamp"),
        EXIT_COLUMN_NOT_FOUND,
        "spec.input.timestampColumn",
        ['"event_timestamp"', "not a column", "it has: row, customer_id, scored_at, segment"],
    ),
    "entity-key": Case(
        _set("spec.input.uri", _input(lambda f: f.drop(columns=["customer_id"]))),
        EXIT_COLUMN_NOT_FOUND,
        "spec.input.uri",
        ["no column 'customer_id', the entity key of feature service churn_v1"],
    ),
    "timestamps-not-times": Case(
        _set("spec.input.uri", _input(lambda f: f.assign(scored_at="yesterday"))),
        EXIT_COLUMN_NOT_FOUND,
        "spec.input.timestampColumn",
        ['"scored_at"', "is not a column of times: wrong type"],
    ),
    "output": Case(
        _set("spec.output.uri", _under_a_file),
        EXIT_ARTIFACTS_UNWRITABLE,
        "spec.output.uri",
        ["cannot be written: NotADirectoryError"],
    ),
}


@pytest.mark.parametrize("case", USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_each_user_error_has_its_exit_code_and_failure_json(
    case: Case,
    clean: Path,
    model: Path,
    entities: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In process (the entrypoint's main, as the RayJob calls it): every check comes before Ray."""
    from pipelines.batch import job as entrypoint

    out = tmp_path / "out"
    doc = document("bp-x", entities, out, model, attempt=2)
    case.change(doc, tmp_path, entities)
    monkeypatch.setenv("SLIPWAY_FEAST_DATA", str(clean))
    assert entrypoint.main({BATCH_CONFIG_ENV: json.dumps(doc)}) == case.code
    reported(case, caplog, tmp_path, out, BATCH_FAILURE_FILE, attempt=2)
    assert not (out / BATCH_MANIFEST_FILE).exists()


def test_the_entrypoint_exits_with_the_code_and_ends_with_the_reason(
    clean: Path, model: Path, entities: Path, tmp_path: Path
) -> None:
    """As a subprocess, as a RayJob runs it: the exit code is what Ray reports, the last line why."""
    doc = document("bp-y", entities, tmp_path / "out", model)
    doc["modelVersion"]["featureService"] = "churn_v9"
    job = run_job(doc, clean)
    assert job.returncode == EXIT_FEATURE_SERVICE_NOT_FOUND, job.output[-6000:]
    last = job.output.strip().splitlines()[-1]
    assert last.endswith(
        'FeatureServiceNotFound: spec.featureService "churn_v9": no such feature service in the '
        "Feast registry (it has: churn_v1)"
    ), last
    assert RunFailure.model_validate_json((job.out / BATCH_FAILURE_FILE).read_text()).field == "spec.featureService"
