"""The pipeline tells what the user must fix (a UserError naming the spec field) from what time may
fix (anything else, which propagates): each check on its own, without Ray or Feast."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pipelines.churn import config, failures, sources, storage, train, validation

from slipway.api.artifacts import FAILURE_FILE, VALIDATION_FILE, RunFailure, ValidationFailure, ValidationReport

SERVICE = sources.FeatureServiceInfo(
    name="churn_v1", features=["sessions_30d"], feature_views=["customer_activity"], join_keys=["customer_id"]
)


def run_config(tmp_path: Path, **spec: Any) -> config.RunConfig:
    body: dict[str, Any] = {
        "model": "churn",
        "image": "trainer:test",
        "features": {"featureService": "churn_v1", "entities": {"uri": "file:///d/labels.parquet"}, "label": "churned"},
        "artifacts": {"uri": tmp_path.as_uri() + "/"},
        **spec,
    }
    document = {"name": "churn-1", "namespace": "ml", "attempt": 0, "spec": body}
    return config.load([], {config.RUN_CONFIG_ENV: json.dumps(document)})


def dataset(*columns: str) -> sources.EntityDataset:
    return sources.EntityDataset(
        frame=pd.DataFrame({c: [1] for c in columns}), uri="file:///d/labels.parquet", sha256=""
    )


@pytest.mark.parametrize(
    ("columns", "field", "value", "words"),
    [
        (
            ["customer_id", "event_timestamp"],
            "spec.features.label",
            "churned",
            ["it has: customer_id, event_timestamp"],
        ),
        (["customer_id", "churned"], "spec.features.entities.timestampColumn", "event_timestamp", ["not a column"]),
        (["customer_id"], "spec.features.entities.timestampColumn", "event_timestamp", ["also missing: churned"]),
        (
            ["event_timestamp", "churned"],
            "spec.features.entities.uri",
            "file:///d/labels.parquet",
            ["no column 'customer_id', the entity key of feature service churn_v1"],
        ),
    ],
)
def test_a_missing_column_names_its_field(columns: list[str], field: str, value: str, words: list[str]) -> None:
    with pytest.raises(failures.ColumnNotFound) as missing:
        sources.check_columns(dataset(*columns), SERVICE, "event_timestamp", "churned")
    assert (missing.value.field, missing.value.value, missing.value.reason) == (field, value, "ColumnNotFound")
    for word in words:
        assert word in missing.value.detail


def test_all_columns_there_is_fine() -> None:
    sources.check_columns(dataset("customer_id", "ts", "y"), SERVICE, "ts", "y")


def test_a_missing_or_unreadable_dataset(tmp_path: Path) -> None:
    with pytest.raises(failures.DatasetNotFound, match="no such file") as missing:
        sources.read_entities((tmp_path / "nope.parquet").as_uri())
    assert missing.value.field == "spec.features.entities.uri"
    (tmp_path / "labels.csv").write_text("customer_id,churned\n1,0\n")
    with pytest.raises(failures.DatasetNotFound, match="is not a readable parquet file"):
        sources.read_entities((tmp_path / "labels.csv").as_uri())
    with pytest.raises(failures.DatasetNotFound, match="cannot be read: IsADirectoryError"):
        sources.read_entities(tmp_path.as_uri())
    with pytest.raises(failures.DatasetNotFound, match="cannot be read"):
        sources.read_entities("nosuchscheme://bucket/labels.parquet")


def test_a_dataset_read_that_may_pass_later_is_not_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def flaky(uri: str) -> bytes:
        raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")

    monkeypatch.setattr(storage, "read_bytes", flaky)
    with pytest.raises(ConnectionResetError):
        sources.read_entities("s3://data/labels.parquet")


class Store:
    """Feast's FeatureStore, as far as describe_service goes."""

    def __init__(self, services: list[str]) -> None:
        self.services = services

    def get_feature_service(self, name: str) -> Any:
        from feast.errors import FeatureServiceNotFoundException

        raise FeatureServiceNotFoundException(name, "churn")

    def list_feature_services(self) -> list[Any]:
        return [type("Service", (), {"name": name})() for name in self.services]


def test_an_unknown_feature_service_lists_those_there_are() -> None:
    with pytest.raises(failures.FeatureServiceNotFound) as missing:
        sources.describe_service(Store(["churn_v2", "churn_v1"]), "churn_v9")
    assert (missing.value.field, missing.value.value) == ("spec.features.featureService", "churn_v9")
    assert "it has: churn_v1, churn_v2" in missing.value.detail
    many = [f"s{i:02d}" for i in range(20)]
    with pytest.raises(failures.FeatureServiceNotFound, match=r"s11, \.\.\. \(20 in all\)"):
        sources.describe_service(Store(many), "x")


def test_timestamps_that_are_not_times_fail_validation() -> None:
    frame = pd.DataFrame({"customer_id": [1, 2], "ts": ["yesterday", "today"]})
    with pytest.raises(failures.DataValidationFailed) as bad:
        sources.entity_dataframe(frame, "ts")
    assert (bad.value.field, bad.value.value) == ("spec.features.entities.timestampColumn", "ts")
    assert [(f.feature, f.check) for f in bad.value.report.failures] == [("ts", "type")]


def test_an_unwritable_artifact_location_fails_first(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    cfg = run_config(tmp_path, artifacts={"uri": (tmp_path / "file").as_uri() + "/models/"})
    run_dir = storage.resolve(f"{cfg.spec.artifacts.uri}runs/{cfg.name}/")
    with pytest.raises(failures.ArtifactsUnwritable) as refused:
        train.prepare(cfg, run_dir)
    assert refused.value.field == "spec.artifacts.uri" and refused.value.value == cfg.spec.artifacts.uri
    assert "NotADirectoryError" in refused.value.detail
    assert train.run(cfg) == failures.ArtifactsUnwritable.exit_code  # and no failure.json anywhere
    assert not list(tmp_path.rglob(FAILURE_FILE))


def test_prepare_clears_what_an_earlier_run_of_the_same_name_left(tmp_path: Path) -> None:
    cfg = run_config(tmp_path)
    run_dir = tmp_path / "runs" / "churn-1"
    run_dir.mkdir(parents=True)
    (run_dir / FAILURE_FILE).write_text("{}")
    (run_dir / VALIDATION_FILE).write_text("{}")
    train.prepare(cfg, run_dir.as_uri())
    assert sorted(p.name for p in run_dir.iterdir()) == []


def test_a_user_error_is_written_with_its_attempt_and_exit_code(tmp_path: Path) -> None:
    error = failures.DatasetNotFound("spec.features.entities.uri", "file:///d/x.parquet", "no such file")
    assert train.conclude(error, tmp_path.as_uri(), attempt=2) == failures.DatasetNotFound.exit_code
    written = RunFailure.model_validate_json((tmp_path / FAILURE_FILE).read_text())
    assert written == error.failure(2)
    assert written.reason == "DatasetNotFound" and written.exit_code == 5


@pytest.mark.parametrize(
    ("failure", "field", "value"),
    [
        (
            ValidationFailure(feature="sessions_30d", check=validation.MISSING_FRACTION),
            "spec.dataValidation.maxMissingFraction",
            "0.01",
        ),
        (ValidationFailure(feature="monthly_charges", check=validation.DRIFT), "spec.dataValidation.maxDrift", "0.2"),
        (ValidationFailure(feature="churned", check=validation.TYPE), "spec.features.label", "churned"),
        (ValidationFailure(feature="churned", check=validation.MISSING_FRACTION), "spec.features.label", "churned"),
        (ValidationFailure(feature="sessions_30d", check=validation.TYPE), "spec.features.featureService", "churn_v1"),
        (
            ValidationFailure(feature="*", check=validation.ROWS),
            "spec.features.entities.uri",
            "file:///d/labels.parquet",
        ),
    ],
)
def test_a_failed_validation_names_the_field_behind_its_first_check(
    tmp_path: Path, failure: ValidationFailure, field: str, value: str
) -> None:
    report = ValidationReport(passed=False, reason="x", failures=[failure])
    assert train.validation_field(run_config(tmp_path), report) == (field, value)


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (FileNotFoundError(errno.ENOENT, "x"), True),
        (PermissionError(errno.EACCES, "x"), True),
        (OSError(errno.EROFS, "read-only file system"), True),
        (ValueError("Protocol not known: nosuchscheme"), True),
        (ImportError("Install s3fs to access S3"), True),
        (ConnectionResetError(errno.ECONNRESET, "reset"), False),
        (TimeoutError(errno.ETIMEDOUT, "timed out"), False),
        (OSError(errno.EIO, "i/o error"), False),
    ],
)
def test_which_storage_errors_a_retry_would_meet_again(error: BaseException, permanent: bool) -> None:
    assert failures.permanent(error) is permanent
