"""The training entrypoint end to end: Feast features -> validation -> Ray Train -> artifacts.

Each case runs `python -m pipelines.churn.train` as a subprocess, as a RayJob would, against a
Ray instance started once for the module (RAY_ADDRESS) and a small generated data set; the user
errors, which all come before Ray, run the entrypoint's main in process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slipway.api.artifacts import (
    EXIT_ARTIFACTS_UNWRITABLE,
    EXIT_COLUMN_NOT_FOUND,
    EXIT_DATA_VALIDATION,
    EXIT_DATASET_NOT_FOUND,
    EXIT_FEATURE_SERVICE_NOT_FOUND,
    EXIT_INVALID_HYPERPARAMETER,
    FAILURE_FILE,
    FAILURE_REASONS,
    MANIFEST_FILE,
    MODEL_FILE,
    VALIDATION_FILE,
    Manifest,
    RunFailure,
    ValidationReport,
    profile_uri,
    run_uri,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CUSTOMERS = 2000
FAST = ["--hp", "epochs=3", "--hp", "learningRate=0.01", "--hp", "batchSize=128"]


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float
    run_dir: Path

    def json(self, name: str) -> Any:
        return json.loads((self.run_dir / name).read_text())


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """One local Ray instance for every run of the module (the entrypoint joins it via RAY_ADDRESS)."""
    import ray

    context = ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        yield str(context.address_info["gcs_address"])
    finally:
        ray.shutdown()


def feast_data(directory: Path, **options: Any) -> Path:
    """Generate the churn data set into `directory` and register the Feast repo on it."""
    from feature_repo.generate import generate
    from feature_repo.store import apply_repo

    generate(directory, customers=CUSTOMERS, seed=0, **options)
    apply_repo(data_dir=str(directory))
    return directory


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return feast_data(tmp_path_factory.mktemp("feast-clean"))


def run_spec(data: Path, artifacts: Path, entities: Path | None = None) -> dict[str, Any]:
    return {
        "model": "churn",
        "image": "ghcr.io/example/slipway-trainer:test",
        "features": {
            "featureService": "churn_v1",
            "entities": {"uri": (entities or data / "labels.parquet").as_uri(), "timestampColumn": "event_timestamp"},
            "label": "churned",
        },
        "dataValidation": {"maxMissingFraction": 0.01, "maxDrift": 0.2},
        "scaling": {"workers": 2, "cpusPerWorker": 1, "gpusPerWorker": 0},
        "artifacts": {"uri": artifacts.as_uri() + "/"},
    }


def train(
    name: str,
    data: Path,
    artifacts: Path,
    ray_address: str,
    *args: str,
    attempt: int = 0,
    entities: Path | None = None,
    label: str = "",
    serving: dict[str, Any] | None = None,
) -> Run:
    """The entrypoint as a RayJob runs it; `serving` is the version the operator names for mustBeatServing."""
    spec = run_spec(data, artifacts, entities)
    if label:
        spec["features"]["label"] = label
    document = {"name": name, "namespace": "ml", "attempt": attempt, "spec": spec}
    if serving is not None:
        document["serving"] = serving
    env = {
        **os.environ,
        "SLIPWAY_TRAINING_RUN": json.dumps(document),
        "SLIPWAY_FEAST_DATA": str(data),
        "RAY_ADDRESS": ray_address,
        "PYTHONPATH": str(REPO),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.churn.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    run_dir = Path(run_uri(artifacts.as_uri(), name).removeprefix("file://"))
    return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started, run_dir)


@pytest.fixture(scope="module")
def first(clean: Path, tmp_path_factory: pytest.TempPathFactory, ray_address: str) -> tuple[Run, Manifest, Path]:
    artifacts = tmp_path_factory.mktemp("artifacts")
    run = train("churn-a", clean, artifacts, ray_address, *FAST)
    assert run.returncode == 0, run.output[-6000:]
    manifest = Manifest.model_validate_json((run.run_dir / MANIFEST_FILE).read_text())
    return run, manifest, artifacts


def test_trains_evaluates_and_writes_the_artifacts(first: tuple[Run, Manifest, Path], clean: Path) -> None:
    import torch
    from feature_repo.store import historical_features, open_store

    run, manifest, artifacts = first
    print(f"first run: {run.seconds:.1f}s, metrics {manifest.metrics}")
    assert manifest.metrics["auc"] > 0.7
    assert 0.5 < manifest.metrics["accuracy"] <= 1 and manifest.metrics["logLoss"] > 0
    assert manifest.epochs == 3 and manifest.resumed_from_epoch is None
    assert manifest.features[:2] == ["sessions_30d", "days_since_last_login"]
    assert "charges_per_tenure_month" in manifest.features

    report = ValidationReport.model_validate(run.json(VALIDATION_FILE))
    assert report.passed and report.rows == 2 * CUSTOMERS
    assert manifest.validation == report

    lineage = manifest.lineage
    assert lineage.feature_service == "churn_v1"
    assert lineage.feature_views == ["customer_activity", "customer_billing", "customer_derived"]
    assert lineage.dataset_sha256 == hashlib.sha256((clean / "labels.parquet").read_bytes()).hexdigest()
    assert lineage.dataset_uri.endswith("labels.parquet") and lineage.image.endswith(":test")
    assert lineage.hyperparameters["epochs"] == "3" and lineage.hyperparameters["learningRate"] == "0.01"
    assert lineage.ray_version and lineage.torch_version == torch.__version__

    accepted = json.loads(Path(profile_uri(artifacts.as_uri()).removeprefix("file://")).read_text())
    assert accepted == manifest.profile and set(accepted["features"]) == set(manifest.features)
    assert len(list((run.run_dir / "checkpoints").glob("churn-a-*/checkpoint_*/state.pt"))) == 3

    # The TorchScript loads without the training code and scores raw features in manifest order.
    frame = historical_features(open_store(data_dir=str(clean)), clean / "labels.parquet")
    x = torch.tensor(frame[manifest.features].to_numpy(dtype="float32"))
    scorer = torch.jit.load(str(run.run_dir / MODEL_FILE))
    p = scorer(x).detach().numpy()
    assert p.shape == (len(frame),) and np.all((p >= 0) & (p <= 1))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(frame["churned"], p) > 0.7


def test_a_retry_resumes_from_the_latest_checkpoint(
    first: tuple[Run, Manifest, Path], clean: Path, ray_address: str
) -> None:
    _, _, artifacts = first
    more = [*FAST, "--hp", "epochs=4"]
    run = train("churn-a", clean, artifacts, ray_address, *more, attempt=1)
    assert run.returncode == 0, run.output[-6000:]
    print(f"retry: {run.seconds:.1f}s")
    manifest = Manifest.model_validate_json((run.run_dir / MANIFEST_FILE).read_text())
    assert manifest.resumed_from_epoch == 2
    assert manifest.epochs == 4
    history = run.json("history.json")
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert manifest.metrics["auc"] > 0.7


def test_missing_values_fail_validation_with_exit_3(tmp_path: Path, ray_address: str) -> None:
    data = feast_data(tmp_path / "feast", missing={"sessions_30d": 0.2})
    artifacts = tmp_path / "artifacts"
    run = train("churn-missing", data, artifacts, ray_address, *FAST)
    print(f"missing values: {run.seconds:.1f}s")
    assert run.returncode == EXIT_DATA_VALIDATION, run.output[-6000:]
    report = ValidationReport.model_validate(run.json(VALIDATION_FILE))
    assert not report.passed
    assert [(f.feature, f.check) for f in report.failures] == [("sessions_30d", "missing-fraction")]
    assert report.reason.startswith("missing fraction above 0.01: sessions_30d (0.")
    assert not (run.run_dir / MANIFEST_FILE).exists()
    assert not Path(profile_uri(artifacts.as_uri()).removeprefix("file://")).exists()


def test_drift_against_the_accepted_profile_fails_validation(
    first: tuple[Run, Manifest, Path], tmp_path: Path, ray_address: str
) -> None:
    _, _, artifacts = first
    data = feast_data(tmp_path / "feast", shift={"monthly_charges": 40.0})
    run = train("churn-drift", data, artifacts, ray_address, *FAST)
    assert run.returncode == EXIT_DATA_VALIDATION, run.output[-6000:]
    report = ValidationReport.model_validate(run.json(VALIDATION_FILE))
    drifted = {f.feature for f in report.failures if f.check == "drift"}
    assert "monthly_charges" in drifted
    assert "drift above 0.2: " in report.reason and "monthly_charges (PSI " in report.reason


def test_validation_failure_is_reported_in_failure_json_too(tmp_path: Path, ray_address: str) -> None:
    data = feast_data(tmp_path / "feast", missing={"sessions_30d": 0.2})
    run = train("churn-missing-2", data, tmp_path / "artifacts", ray_address, *FAST, attempt=1)
    assert run.returncode == EXIT_DATA_VALIDATION, run.output[-6000:]
    failure = RunFailure.model_validate(run.json(FAILURE_FILE))
    assert (failure.reason, failure.field, failure.value) == (
        "DataValidationFailed",
        "spec.dataValidation.maxMissingFraction",
        "0.01",
    )
    assert failure.attempt == 1 and "sessions_30d" in failure.detail
    # The output ends with the one line Ray's message about the job (and the RayJob's) ends with.
    last = run.output.strip().splitlines()[-1]
    assert 'DataValidationFailed: spec.dataValidation.maxMissingFraction "0.01": missing fraction' in last


@dataclass
class Case:
    """A TrainingRun the user must fix: what to change in the spec, what the pipeline must say."""

    change: Any  # (spec, tmp_path, clean) -> None, editing the spec in place
    code: int
    field: str
    words: list[str]


def _set(path: str, value: Any) -> Any:
    def change(spec: dict[str, Any], tmp: Path, clean: Path) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[key]
        node[last] = value(tmp, clean) if callable(value) else value

    return change


def _without(column: str) -> Any:
    def write(tmp: Path, clean: Path) -> str:
        import pandas as pd

        target = tmp / f"without-{column}.parquet"
        pd.read_parquet(clean / "labels.parquet").drop(columns=[column]).to_parquet(target)
        return target.as_uri()

    return write


def _csv(tmp: Path, clean: Path) -> str:
    (tmp / "labels.csv").write_text("customer_id,event_timestamp,churned\n1,2025-01-01,0\n")
    return (tmp / "labels.csv").as_uri()


def _under_a_file(tmp: Path, clean: Path) -> str:
    (tmp / "plain-file").write_text("not a directory")
    return (tmp / "plain-file").as_uri() + "/models/"


USER_ERRORS = {
    "feature-service": Case(
        _set("features.featureService", "churn_v9"),
        EXIT_FEATURE_SERVICE_NOT_FOUND,
        "spec.features.featureService",
        ['"churn_v9"', "it has: churn_v1"],
    ),
    "dataset-missing": Case(
        _set("features.entities.uri", lambda tmp, clean: (tmp / "nope.parquet").as_uri()),
        EXIT_DATASET_NOT_FOUND,
        "spec.features.entities.uri",
        ["nope.parquet", "no such file"],
    ),
    "dataset-not-parquet": Case(
        _set("features.entities.uri", _csv),
        EXIT_DATASET_NOT_FOUND,
        "spec.features.entities.uri",
        ["labels.csv", "is not a readable parquet file"],
    ),
    "label": Case(
        _set("features.label", "churn"),
        EXIT_COLUMN_NOT_FOUND,
        "spec.features.label",
        ['"churn"', "not a column", "it has: customer_id, event_timestamp, churned"],
    ),
    "label-absent-from-data": Case(
        _set("features.entities.uri", _without("churned")),
        EXIT_COLUMN_NOT_FOUND,
        "spec.features.label",
        ['"churned"', "not a column"],
    ),
    "timestamp": Case(
        _set("features.entities.timestampColumn", "ts"),
        EXIT_COLUMN_NOT_FOUND,
        "spec.features.entities.timestampColumn",
        ['"ts"', "not a column"],
    ),
    "entity-key": Case(
        _set("features.entities.uri", _without("customer_id")),
        EXIT_COLUMN_NOT_FOUND,
        "spec.features.entities.uri",
        ["no column 'customer_id', the entity key of feature service churn_v1"],
    ),
    "hyperparameter": Case(
        _set("hyperparameters", {"learningRate": "fast"}),
        EXIT_INVALID_HYPERPARAMETER,
        "spec.hyperparameters.learningRate",
        ['"fast"', "does not parse"],
    ),
    "hyperparameter-range": Case(
        _set("hyperparameters", {"epochs": "0"}),
        EXIT_INVALID_HYPERPARAMETER,
        "spec.hyperparameters.epochs",
        ['"0"', "must be >= 1"],
    ),
    "artifacts": Case(
        _set("artifacts.uri", _under_a_file),
        EXIT_ARTIFACTS_UNWRITABLE,
        "spec.artifacts.uri",
        ["cannot be written: NotADirectoryError"],
    ),
}


@pytest.mark.parametrize("case", USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_each_user_error_has_its_exit_code_and_failure_json(
    case: Case, clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In process (the entrypoint's main, as the RayJob calls it): every check comes before Ray."""
    from pipelines.churn import train as entrypoint

    artifacts = tmp_path / "artifacts"
    spec = run_spec(clean, artifacts)
    case.change(spec, tmp_path, clean)
    monkeypatch.setenv("SLIPWAY_FEAST_DATA", str(clean))
    env = {"SLIPWAY_TRAINING_RUN": json.dumps({"name": "churn-x", "namespace": "ml", "attempt": 0, "spec": spec})}
    assert entrypoint.main([], env) == case.code
    reported(case, caplog, tmp_path, artifacts / "runs" / "churn-x", FAILURE_FILE, attempt=0)
    assert not (artifacts / "runs" / "churn-x" / MANIFEST_FILE).exists()


def reported(
    case: Case, caplog: pytest.LogCaptureFixture, tmp_path: Path, directory: Path, name: str, attempt: int
) -> None:
    """The entrypoint's last log line names the reason and field, and `name` (failure.json) in
    `directory` says what to fix, with the attempt; nowhere for an unwritable location."""
    last = caplog.records[-1].getMessage()
    assert last.startswith(f'{FAILURE_REASONS[case.code]}: {case.field} "'), last
    written = list(tmp_path.rglob(name))
    if case.code == EXIT_ARTIFACTS_UNWRITABLE:
        assert written == [] and "NotADirectoryError" in last  # nowhere to write it: the exit code says it
        return
    assert written == [directory / name]
    failure = RunFailure.model_validate_json(written[0].read_text())
    assert (failure.reason, failure.exit_code, failure.field, failure.attempt) == (
        FAILURE_REASONS[case.code],
        case.code,
        case.field,
        attempt,
    )
    for word in case.words:
        assert word in f'"{failure.value}" {failure.detail}', failure


def test_the_entrypoint_exits_with_the_code_and_ends_with_the_reason(
    clean: Path, tmp_path: Path, ray_address: str
) -> None:
    """The same as a subprocess, as a RayJob runs it: the exit code is what Ray reports."""
    run = train("churn-nolabel", clean, tmp_path / "artifacts", ray_address, *FAST, label="churn")
    assert run.returncode == EXIT_COLUMN_NOT_FOUND, run.output[-6000:]
    dataset = (clean / "labels.parquet").as_uri()
    expected = f'ColumnNotFound: spec.features.label "churn": not a column of the entity dataset {dataset}'
    assert run.output.strip().splitlines()[-1].endswith(f"{expected}; it has: customer_id, event_timestamp, churned")
    assert RunFailure.model_validate(run.json(FAILURE_FILE)).field == "spec.features.label"
    assert not (run.run_dir / VALIDATION_FILE).exists()  # no data was joined, nothing validated
