"""BatchPrediction: the RayJob builder, the version resolution and the judgement of a finished attempt."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway.api.artifacts import (
    EXIT_ARTIFACTS_UNWRITABLE,
    EXIT_COLUMN_NOT_FOUND,
    EXIT_CONFIG,
    EXIT_DATASET_NOT_FOUND,
    EXIT_FEATURE_SERVICE_NOT_FOUND,
    RunFailure,
)
from slipway.api.batchprediction import (
    BATCH_CONFIG_ENV,
    BATCH_FAILURE_REASONS,
    BatchJobConfig,
    BatchManifest,
    BatchPredictionSpec,
    BatchPredictionStatus,
    ResolvedVersion,
    output_file,
)
from slipway.api.defaults import MissingField, OperatorDefaults
from slipway.api.modelversion import Gates, Lineage, ModelVersionSpec
from slipway.api.trainingrun import TrainingRunSpec
from slipway.builders.batchprediction import build_batch_rayjob
from slipway.builders.rayjob import build_rayjob
from slipway.reconcile import reasons
from slipway.reconcile.batchprediction import (
    describe_versions,
    finished_status,
    judge_batch,
    resolve,
    resolved_status,
    unresolved_status,
)
from slipway.reconcile.trainingrun import phase_reason, rayjob_outcome, refused_status, training_status

NOW = "2026-12-05T10:00:00Z"
BASE: dict[str, Any] = {
    "model": "churn",
    "image": "trainer:1",
    "input": {"uri": "s3://data/customers.parquet"},
    "output": {"uri": "s3://predictions/churn/2026-12-05/"},
}
VERSION = ResolvedVersion(name="churn-v3", version=3, uri="s3://models/churn/3/", feature_service="churn_v1")


def spec(**overrides: Any) -> BatchPredictionSpec:
    return BatchPredictionSpec.model_validate({**BASE, **overrides})


def mv(version: int, passed: bool | None = True, service: str = "churn_v1", model: str = "churn") -> ModelVersionSpec:
    return ModelVersionSpec(
        model=model,
        version=version,
        uri=f"s3://models/{model}/{version}/",
        lineage=Lineage(feature_service=service, dataset_uri="s3://data/labels.parquet") if service else None,
        gates=None if passed is None else Gates(passed=passed, metric="auc", value=0.9),
    )


REGISTRY = {"churn-v1": mv(1), "churn-v2": mv(2), "churn-v3": mv(3, passed=False), "other-v9": mv(9, model="other")}


# -- the builder ----------------------------------------------------------------------------------


def workers(job: dict[str, Any]) -> dict[str, Any]:
    group: dict[str, Any] = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    return group


@pytest.mark.parametrize(
    ("scaling", "replicas", "requests", "gpu"),
    [
        ({}, 2, {"cpu": "1", "memory": "4Gi"}, False),
        ({"workers": 4, "cpusPerWorker": 0.5, "memoryPerWorker": "1Gi"}, 4, {"cpu": "500m", "memory": "1Gi"}, False),
        ({"workers": 1, "gpusPerWorker": 2}, 1, {"cpu": "1", "memory": "4Gi", "nvidia.com/gpu": "2"}, True),
    ],
)
def test_worker_group_follows_scaling(
    scaling: dict[str, Any], replicas: int, requests: dict[str, str], gpu: bool
) -> None:
    job = build_batch_rayjob("score", "ml", spec(scaling=scaling), 0, VERSION)
    group = workers(job)
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (replicas, replicas, replicas)
    assert group["template"]["spec"]["containers"][0]["resources"] == {"requests": requests, "limits": requests}
    assert ("tolerations" in group["template"]["spec"]) is gpu
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"] and head["image"] == "trainer:1"


def test_the_job_runs_the_scoring_entrypoint_with_the_resolved_version() -> None:
    job = build_batch_rayjob("score", "ml", spec(version="latest", activeDeadlineSeconds=900), 2, VERSION)
    assert shlex.split(job["spec"]["entrypoint"]) == ["python", "-m", "pipelines.batch"]
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    config = BatchJobConfig.model_validate(json.loads(env[BATCH_CONFIG_ENV]))
    assert (config.name, config.namespace, config.attempt) == ("score", "ml", 2)
    assert config.model_version == VERSION
    assert config.spec == spec(version="latest", activeDeadlineSeconds=900)  # round-trips: the job parses it
    assert "modelVersion" in json.loads(env[BATCH_CONFIG_ENV])  # camelCase on the wire
    assert job["metadata"]["name"] == "score-2"
    assert job["spec"]["activeDeadlineSeconds"] == 900 and job["spec"]["ttlSecondsAfterFinished"] == 60
    labels = job["metadata"]["labels"]
    assert labels["slipway.dev/batch-prediction"] == "score" and labels["slipway.dev/model"] == "churn"
    assert "slipway.dev/training-run" not in labels  # the TrainingRun handlers never see it


def test_credentials_are_referenced_on_head_and_workers() -> None:
    job = build_batch_rayjob("score", "ml", spec(output={**BASE["output"], "credentialsSecret": "s3"}), 0, VERSION)
    cluster = job["spec"]["rayClusterSpec"]
    for pod in (cluster["headGroupSpec"], workers(job)):
        assert pod["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3"}}]
    plain = build_batch_rayjob("score", "ml", spec(), 0, VERSION)
    assert "envFrom" not in workers(plain)["template"]["spec"]["containers"][0]


def test_one_code_path_builds_both_kinds_rayjobs() -> None:
    """The RayCluster of a TrainingRun and a BatchPrediction with the same scaling is the same."""
    run = TrainingRunSpec.model_validate(
        {
            "model": "churn",
            "image": "trainer:1",
            "features": {"featureService": "churn_v1", "entities": {"uri": "s3://d/l.parquet"}, "label": "churned"},
            "scaling": {"workers": 2, "gpusPerWorker": 1},
            "artifacts": {"uri": "s3://m/", "credentialsSecret": "s3"},
        }
    )
    training = build_rayjob("a", "ml", run, 0)["spec"]["rayClusterSpec"]
    batch = build_batch_rayjob(
        "a",
        "ml",
        spec(scaling={"workers": 2, "gpusPerWorker": 1}, output={"uri": "s3://o/", "credentialsSecret": "s3"}),
        0,
        VERSION,
    )["spec"]["rayClusterSpec"]
    for cluster in (training, batch):  # only the labels differ
        for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"]):
            group["template"]["metadata"] = {}
    assert training == batch


def test_the_image_defaults_to_the_trainer_image() -> None:
    unset = spec(image=None)
    assert OperatorDefaults(trainer_image="trainer:2").run(unset).image == "trainer:2"
    assert OperatorDefaults(trainer_image="trainer:2").run(spec()).image == "trainer:1"
    with pytest.raises(MissingField, match=r"spec\.image"):
        OperatorDefaults().run(unset)


# -- resolving the version --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "recorded", "name", "reason", "words"),
    [
        ("latest", None, "churn-v2", reasons.VERSION_RESOLVED, ["churn-v2", 'spec.version "latest"']),
        (1, None, "churn-v1", reasons.VERSION_RESOLVED, ["version 1"]),
        ("1", None, "churn-v1", reasons.VERSION_RESOLVED, []),
        (3, None, "churn-v3", reasons.VERSION_RESOLVED, []),  # a number is taken as asked, gates or not
        # A newer version that arrived after the start never changes a prediction under way.
        ("latest", "churn-v1", "churn-v1", reasons.VERSION_RESOLVED, []),
        (
            7,
            None,
            None,
            reasons.VERSION_NOT_FOUND,
            ['spec.version "7"', "does not exist", "churn-v1 (1), churn-v2 (2), churn-v3 (3, failed its gates)"],
        ),
        ("latest", "churn-v8", None, reasons.VERSION_NOT_FOUND, ['status.modelVersion "churn-v8"', "is gone"]),
    ],
)
def test_the_version_is_resolved_once_and_a_missing_one_is_named(
    requested: int | str, recorded: str | None, name: str | None, reason: str, words: list[str]
) -> None:
    resolution = resolve(spec(version=requested), REGISTRY, recorded)
    assert resolution.reason == reason, resolution.message
    assert (resolution.version.name if resolution.version else None) == name
    for word in words:
        assert word in resolution.message, resolution.message
    if resolution.version is not None:
        assert resolution.version.feature_service == "churn_v1"
        assert resolution.lineage is not None and resolution.lineage.dataset_uri == "s3://data/labels.parquet"


def test_latest_with_no_version_that_passed_its_gates() -> None:
    failed = resolve(spec(), {"churn-v1": mv(1, passed=False)}, None)
    assert failed.version is None and failed.reason == reasons.NO_VERSION_PASSED_GATES
    assert "churn-v1 (1, failed its gates)" in failed.message
    empty = resolve(spec(), {}, None)
    assert empty.reason == reasons.VERSION_NOT_FOUND and "model churn has no ModelVersion" in empty.message
    assert resolve(spec(), {"churn-v4": mv(4, passed=None)}, None).version is not None  # registered by hand


def test_the_feature_service_is_the_specs_or_the_versions_lineage() -> None:
    assert resolve(spec(featureService="churn_v2"), REGISTRY, None).version == ResolvedVersion(
        name="churn-v2", version=2, uri="s3://models/churn/2/", feature_service="churn_v2"
    )
    bare = resolve(spec(), {"churn-v1": mv(1, service="")}, None)
    assert bare.version is None and bare.reason == reasons.FEATURE_SERVICE_NOT_FOUND
    assert "spec.featureService is unset" in bare.message and "churn-v1" in bare.message
    assert describe_versions("other", REGISTRY) == "ModelVersions of other: other-v9 (9)"


def test_the_resolution_is_recorded_with_the_first_rayjob() -> None:
    resolution = resolve(spec(), REGISTRY, None)
    status = resolved_status(BatchPredictionStatus(), "score", resolution, 1, NOW)
    assert (status.phase, status.version, status.model_version) == ("Pending", 2, "churn-v2")
    assert status.ray_job is not None and status.ray_job.name == "score-0"
    assert status.lineage is not None and status.lineage.feature_service == "churn_v1"
    (condition,) = status.conditions
    assert (condition.type, condition.status, condition.reason) == ("VersionResolved", "True", "ModelVersionResolved")
    refused = refused_status(BatchPredictionStatus(), "no such version", 1, NOW, reasons.VERSION_NOT_FOUND)
    assert refused.phase == "Failed" and phase_reason(refused) == reasons.VERSION_NOT_FOUND
    assert refused.ray_job is None and refused.completion_time == NOW


def test_a_version_not_there_yet_waits_and_anything_else_fails() -> None:
    """As a ModelDeployment does: a run still training may register the version asked for."""
    missing = resolve(spec(version=7), REGISTRY, None)
    waiting = unresolved_status(BatchPredictionStatus(), missing, None, 1, NOW)
    assert waiting.phase == "Pending" and waiting.ray_job is None and waiting.completion_time is None
    (condition,) = waiting.conditions
    assert (condition.type, condition.status, condition.reason) == ("VersionResolved", "False", "ModelVersionNotFound")
    assert waiting.message is not None and 'spec.version "7"' in waiting.message
    gone = resolve(spec(), REGISTRY, "churn-v8")
    assert unresolved_status(RUNNING, gone, "churn-v8", 1, NOW).phase == "Failed"
    bare = resolve(spec(), {"churn-v1": mv(1, service="")}, None)
    failed = unresolved_status(BatchPredictionStatus(), bare, None, 1, NOW)
    assert failed.phase == "Failed" and phase_reason(failed) == reasons.FEATURE_SERVICE_NOT_FOUND


# -- a finished attempt -----------------------------------------------------------------------------

RUNNING = resolved_status(BatchPredictionStatus(), "score", resolve(spec(), REGISTRY, None), 1, NOW)


def ray_failed(code: int, last: str = "") -> dict[str, Any]:
    message = (
        f"Job entrypoint command failed with exit code {code}, last available logs (truncated):\nTraceback\n{last}\n"
    )
    return {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed", "reason": "AppFailed", "message": message}


SUCCEEDED = {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete", "endTime": "2026-12-05T10:05:00Z"}


def failure(code: int, field: str, value: str, attempt: int = 0, reason: str | None = None) -> RunFailure:
    return RunFailure(
        reason=reason or BATCH_FAILURE_REASONS[code],
        exit_code=code,
        field=field,
        value=value,
        detail="what is wrong",
        attempt=attempt,
    )


def manifest(**overrides: Any) -> BatchManifest:
    values: dict[str, Any] = {
        "batch_prediction": "score",
        "attempt": 0,
        "model": "churn",
        "version": 2,
        "model_version": "churn-v2",
        "feature_service": "churn_v1",
        "input": BASE["input"]["uri"],
        "rows_read": 1000,
        "rows_written": 1000,
        "seconds": 4.0,
        "files": ["part-0.parquet"],
    }
    return BatchManifest(**{**values, **overrides})


@pytest.mark.parametrize(
    ("job", "file", "attempt", "action", "reason", "words"),
    [
        # What the user must fix fails at once, naming the field and its value (failure.json or exit code).
        (
            ray_failed(5),
            failure(5, "spec.input.uri", "s3://data/x.parquet"),
            0,
            "fail",
            "DatasetNotFound",
            ["s3://data/x"],
        ),
        (ray_failed(5), None, 0, "fail", "DatasetNotFound", ['spec.input.uri "s3://data/customers.parquet"']),
        (ray_failed(6), None, 0, "fail", "ColumnNotFound", ['spec.input.timestampColumn "event_timestamp"']),
        (ray_failed(4), None, 0, "fail", "FeatureServiceNotFound", ['spec.featureService "churn_v1"', "lineage"]),
        (ray_failed(8), None, 0, "fail", "OutputUnwritable", ['spec.output.uri "s3://predictions/churn']),
        (ray_failed(2), None, 0, "fail", "EntrypointConfigInvalid", ['spec.image "trainer:1"']),
        # The job's file may name the training reason for an unwritable location: the exit code decides.
        (
            ray_failed(8),
            failure(8, "spec.output.uri", "s3://nope/", reason="ArtifactsUnwritable"),
            0,
            "fail",
            "OutputUnwritable",
            ['"s3://nope/"'],
        ),
        # Another attempt's file is ignored: the exit code alone speaks.
        (ray_failed(5), failure(6, "spec.input.timestampColumn", "ts", attempt=1), 0, "fail", "DatasetNotFound", []),
        # What time may fix is retried up to backoffLimit (2), then fails with the count.
        (ray_failed(1, "RayTaskError: node lost"), None, 0, "retry", reasons.RETRYING, ["retry 1 of 2", "node lost"]),
        (
            {"jobDeploymentStatus": "Failed", "message": "worker OOMKilled"},
            None,
            1,
            "retry",
            "Retrying",
            ["retry 2 of 2"],
        ),
        (ray_failed(1), None, 2, "fail", reasons.BACKOFF_LIMIT_EXCEEDED, ["3 attempts failed"]),
        ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}, None, 0, "fail", "DeadlineExceeded", []),
        ({"jobDeploymentStatus": "ValidationFailed", "message": "bad"}, None, 0, "fail", "RayJobInvalid", []),
    ],
)
def test_a_failed_attempt_is_classified(
    job: dict[str, Any], file: RunFailure | None, attempt: int, action: str, reason: str, words: list[str]
) -> None:
    status = RUNNING.model_copy(update={"attempt": attempt})
    judgement = judge_batch("score", spec(), status, rayjob_outcome(job), file, None, logs="kubectl logs job/x")
    assert (judgement.action, judgement.reason) == (action, reason), judgement.message
    for word in words:
        assert word in judgement.message, judgement.message
    if action == "fail" and reason in BATCH_FAILURE_REASONS.values():
        assert "not retried" in judgement.message and "kubectl logs job/x" in judgement.message


def test_every_exit_code_of_the_job_has_a_reason_and_a_field() -> None:
    known = {value for key, value in vars(reasons).items() if key.isupper()}
    assert set(BATCH_FAILURE_REASONS.values()) <= known
    codes = (EXIT_CONFIG, EXIT_FEATURE_SERVICE_NOT_FOUND, EXIT_DATASET_NOT_FOUND, EXIT_COLUMN_NOT_FOUND)
    assert set(BATCH_FAILURE_REASONS) == {*codes, EXIT_ARTIFACTS_UNWRITABLE}
    for code in BATCH_FAILURE_REASONS:
        judgement = judge_batch("score", spec(), RUNNING, rayjob_outcome(ray_failed(code)), None, None)
        assert judgement.action == "fail" and judgement.message.startswith("spec."), judgement.message


@pytest.mark.parametrize(
    ("found", "problem", "reason", "words"),
    [
        (manifest(), "", reasons.PREDICTIONS_WRITTEN, ["wrote 1000 predictions", "churn-v2", "250 rows/s"]),
        (
            None,
            "s3://predictions/churn/2026-12-05/manifest.json does not exist",
            reasons.MANIFEST_MISSING,
            ["does not exist"],
        ),
        (manifest(attempt=1), "", reasons.MANIFEST_MISSING, ["another run", "attempt 1"]),
        (manifest(batch_prediction="other"), "", reasons.MANIFEST_MISSING, ["prediction other"]),
        (manifest(model_version="churn-v3", version=3), "", reasons.MANIFEST_MISSING, ["churn-v3"]),
    ],
)
def test_a_succeeded_attempt_needs_its_own_manifest(
    found: BatchManifest | None, problem: str, reason: str, words: list[str]
) -> None:
    judgement = judge_batch("score", spec(), RUNNING, rayjob_outcome(SUCCEEDED), None, found, problem)
    assert judgement.reason == reason, judgement.message
    assert judgement.action == ("succeed" if reason == reasons.PREDICTIONS_WRITTEN else "fail")
    for word in words:
        assert word in judgement.message, judgement.message


def finish(job: dict[str, Any], status: BatchPredictionStatus = RUNNING, **kwargs: Any) -> BatchPredictionStatus:
    lifted = training_status(status, status.ray_job.name if status.ray_job else "score-0", job, 1, NOW)
    values: dict[str, Any] = {"failure": None, "manifest": None, "problem": "", "logs": ""}
    values.update(kwargs)
    return finished_status("score", spec(), lifted, rayjob_outcome(job), now=NOW, **values)


def test_success_fills_rows_output_throughput_and_lineage() -> None:
    done = finish(SUCCEEDED, manifest=manifest(rows_read=1200, rows_written=1000, seconds=3.0))
    assert (done.phase, done.rows_read, done.rows_written, done.throughput) == ("Succeeded", 1200, 1000, 333.3)
    assert done.output == BASE["output"]["uri"] and done.completion_time == "2026-12-05T10:05:00Z"
    assert done.lineage is not None and done.lineage.feature_service == "churn_v1"
    assert (done.version, done.model_version) == (2, "churn-v2")
    complete = {c.type: c for c in done.conditions}["Complete"]
    assert (complete.status, complete.reason) == ("True", reasons.PREDICTIONS_WRITTEN)
    assert phase_reason(done) == reasons.PREDICTIONS_WRITTEN
    assert finish(SUCCEEDED, manifest=manifest(seconds=0)).throughput is None  # never a division by zero


def test_a_retry_names_the_next_attempts_rayjob_and_keeps_the_version() -> None:
    retry = finish({"jobDeploymentStatus": "Failed", "message": "worker OOMKilled"})
    assert (retry.phase, retry.attempt) == ("Pending", 1)
    assert retry.ray_job is not None and retry.ray_job.name == "score-1" and retry.ray_job.job_id is None
    assert (retry.version, retry.model_version) == (2, "churn-v2")
    assert retry.completion_time is None
    failed = {c.type: c for c in retry.conditions}["Failed"]
    assert (failed.status, failed.reason) == ("False", reasons.RETRYING)


def _empties(value: Any, path: str = "status") -> list[str]:
    if value in ("", {}, []):
        return [path]
    if isinstance(value, dict):
        return [e for key, item in value.items() for e in _empties(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [e for i, item in enumerate(value) for e in _empties(item, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize(
    "status",
    [
        RUNNING,
        finish(SUCCEEDED, manifest=manifest()),
        finish(ray_failed(5)),
        finish(ray_failed(1)),
        finish(SUCCEEDED),
        refused_status(BatchPredictionStatus(), "spec.version", 1, NOW, reasons.VERSION_NOT_FOUND),
    ],
    ids=["resolved", "succeeded", "user-error", "retry", "no-manifest", "refused"],
)
def test_no_status_field_is_written_empty(status: BatchPredictionStatus) -> None:
    dumped = status.model_dump(by_alias=True, exclude_none=True)
    dumped.pop("lineage", None)  # the version's own record, copied as it is
    assert not _empties(dumped), dumped


def test_the_job_finds_its_files_beside_the_predictions() -> None:
    assert output_file("file:///tmp/out", "manifest.json") == "file:///tmp/out/manifest.json"
    assert output_file("s3://b/out/", "failure.json") == "s3://b/out/failure.json"


def test_the_kind_example_is_a_valid_prediction_of_latest() -> None:
    example = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "batchprediction.yaml").read_text())
    assert (example["apiVersion"], example["kind"]) == ("slipway.dev/v1alpha1", "BatchPrediction")
    parsed = BatchPredictionSpec.model_validate(example["spec"])
    assert parsed.version == "latest" and parsed.output.uri.startswith("file:///slipway-data/")
