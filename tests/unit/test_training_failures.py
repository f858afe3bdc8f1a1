"""The taxonomy of training failures: what the job left (exit code, failure.json, validation.json)
-> the run's reason, message and whether it is retried."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.api.artifacts import (
    EXIT_COLUMN_NOT_FOUND,
    EXIT_DATA_VALIDATION,
    EXIT_DATASET_NOT_FOUND,
    EXIT_FEATURE_SERVICE_NOT_FOUND,
    EXIT_INVALID_HYPERPARAMETER,
    FAILURE_REASONS,
    RunFailure,
    ValidationReport,
)
from slipway.api.trainingrun import TrainingRunSpec, TrainingRunStatus
from slipway.reconcile import reasons
from slipway.reconcile.training import judge, logs_hint
from slipway.reconcile.trainingrun import MESSAGE_LIMIT, Outcome, job_message, rayjob_outcome, training_status

RUN = TrainingRunSpec.model_validate(
    {
        "model": "churn",
        "image": "trainer:1",
        "features": {
            "featureService": "churn_v9",
            "entities": {"uri": "s3://data/labels.parquet", "timestampColumn": "ts"},
            "label": "churned",
        },
        "hyperparameters": {"learningRate": "fast"},
        "artifacts": {"uri": "s3://models/churn/"},
        "backoffLimit": 2,
    }
)
ARTIFACTS = "s3://models/churn/runs/r/"
LOGS = logs_hint("ml", "r-0", "ml-r-0-1a2b3c4d")
TRACEBACK = "\n".join(
    [
        "Traceback (most recent call last):",
        '  File "/app/pipelines/churn/train.py", line 80, in run',
        "    service = sources.describe_service(store, spec.features.feature_service)",
        *(f"  frame {i}" for i in range(400)),  # a long log tail
    ]
)


def ray_failed(code: int, last: str = "") -> str:
    """Ray's job message for an entrypoint that exited `code`, as KubeRay copies it to the RayJob."""
    return (
        f"Job entrypoint command failed with exit code {code}, last available logs (truncated to 20,000 chars):\n"
        f"{TRACEBACK}\n{last}\n"
    )


def failed(message: str) -> Outcome:
    return rayjob_outcome(
        {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed", "reason": "AppFailed", "message": message}
    )


def failure(code: int, field: str, value: str, detail: str, attempt: int = 0) -> RunFailure:
    return RunFailure(
        reason=FAILURE_REASONS[code], exit_code=code, field=field, value=value, detail=detail, attempt=attempt
    )


SERVICE = failure(
    EXIT_FEATURE_SERVICE_NOT_FOUND,
    "spec.features.featureService",
    "churn_v9",
    "no such feature service in the Feast registry (it has: churn_v1)",
)
BAD_DATA = ValidationReport(passed=False, reason="missing fraction above 0.01: sessions_30d (0.20)")


@pytest.mark.parametrize(
    ("message", "file", "validation", "attempt", "action", "reason", "words"),
    [
        # Each user error: its own reason at once, the field and value named, whatever the attempt.
        (ray_failed(4), SERVICE, None, 0, "fail", reasons.FEATURE_SERVICE_NOT_FOUND, ['"churn_v9"', "churn_v1"]),
        (
            ray_failed(5),
            failure(EXIT_DATASET_NOT_FOUND, "spec.features.entities.uri", "s3://data/labels.parquet", "no such file"),
            None,
            0,
            "fail",
            reasons.DATASET_NOT_FOUND,
            ['spec.features.entities.uri "s3://data/labels.parquet": no such file'],
        ),
        (
            ray_failed(6),
            failure(EXIT_COLUMN_NOT_FOUND, "spec.features.label", "churn", "not a column of the entity dataset", 1),
            None,
            1,
            "fail",
            reasons.COLUMN_NOT_FOUND,
            ['spec.features.label "churn"'],
        ),
        (
            ray_failed(7),
            failure(EXIT_INVALID_HYPERPARAMETER, "spec.hyperparameters.learningRate", "fast", "does not parse"),
            None,
            0,
            "fail",
            reasons.INVALID_HYPERPARAMETER,
            ['spec.hyperparameters.learningRate "fast": does not parse'],
        ),
        (
            ray_failed(3),
            failure(EXIT_DATA_VALIDATION, "spec.dataValidation.maxMissingFraction", "0.01", BAD_DATA.reason),
            BAD_DATA,
            0,
            "fail",
            reasons.DATA_VALIDATION_FAILED,
            ['spec.dataValidation.maxMissingFraction "0.01"', "sessions_30d (0.20)", ARTIFACTS + "validation.json"],
        ),
        # No failure.json (it could not be written, or not read): the exit code alone says which,
        # and the spec says the field and its value.
        (
            ray_failed(8),
            None,
            None,
            0,
            "fail",
            reasons.ARTIFACTS_UNWRITABLE,
            ['spec.artifacts.uri "s3://models/churn/"', "no failure.json; the entrypoint exited with code 8"],
        ),
        (ray_failed(4), None, None, 0, "fail", reasons.FEATURE_SERVICE_NOT_FOUND, ['featureService "churn_v9"']),
        (ray_failed(5), None, None, 0, "fail", reasons.DATASET_NOT_FOUND, ['uri "s3://data/labels.parquet"']),
        (ray_failed(6), None, None, 0, "fail", reasons.COLUMN_NOT_FOUND, ['label "churned"', "timestampColumn (ts)"]),
        (ray_failed(7), None, None, 0, "fail", reasons.INVALID_HYPERPARAMETER, ['"learningRate=fast"']),
        (ray_failed(3), None, BAD_DATA, 0, "fail", reasons.DATA_VALIDATION_FAILED, ["sessions_30d (0.20)"]),
        (ray_failed(3), None, None, 0, "fail", reasons.DATA_VALIDATION_FAILED, ["the data failed validation"]),
        (ray_failed(2), None, None, 0, "fail", reasons.ENTRYPOINT_CONFIG_INVALID, ['spec.image "trainer:1"']),
        # A message without an exit code (an older trainer, a stand-in): the validation report decides.
        ("exit status unknown", None, BAD_DATA, 0, "fail", reasons.DATA_VALIDATION_FAILED, ["sessions_30d"]),
        # What time may fix: retried, then BackoffLimitExceeded.
        (
            ray_failed(1, "ray.exceptions.ActorDiedError: a worker died"),
            None,
            None,
            0,
            "retry",
            reasons.RETRYING,
            ["ActorDiedError"],
        ),
        (ray_failed(-9), None, None, 1, "retry", reasons.RETRYING, ["exited with code -9", "retry 2 of 2"]),
        (ray_failed(137), None, None, 0, "retry", reasons.RETRYING, ["code 137"]),
        (
            "Job submission has failed. Reason: BackoffLimitExceeded.",
            None,
            None,
            0,
            "retry",
            reasons.RETRYING,
            ["submission"],
        ),
        (
            ray_failed(1, "RuntimeError: boom"),
            None,
            None,
            2,
            "fail",
            reasons.BACKOFF_LIMIT_EXCEEDED,
            ["3 attempts", "boom"],
        ),
        # A failure.json that is not this attempt's, or disagrees with the exit code, is ignored.
        (ray_failed(1, "OSError: connection reset"), SERVICE, None, 0, "retry", reasons.RETRYING, ["connection reset"]),
        (
            ray_failed(4),
            failure(4, "spec.features.featureService", "old", "x", attempt=3),
            None,
            0,
            "fail",
            reasons.FEATURE_SERVICE_NOT_FOUND,
            ['"churn_v9"', "no failure.json"],
        ),
        # A stale failed validation report does not outweigh an exit code that says otherwise.
        (ray_failed(1, "RayTaskError: lost"), None, BAD_DATA, 0, "retry", reasons.RETRYING, ["lost"]),
    ],
)
def test_a_failed_attempt_is_classified(
    message: str,
    file: RunFailure | None,
    validation: ValidationReport | None,
    attempt: int,
    action: str,
    reason: str,
    words: list[str],
) -> None:
    judgement = judge(RUN, attempt, failed(message), validation, None, None, file, ARTIFACTS, LOGS)
    assert (judgement.action, judgement.reason) == (action, reason), judgement.message
    for word in words:
        assert word in judgement.message, judgement.message
    assert "\n" not in judgement.message and len(judgement.message) < 2048
    if action == "fail" and reason not in (reasons.BACKOFF_LIMIT_EXCEEDED,):
        assert "not retried" in judgement.message
        assert LOGS in judgement.message  # where the traceback is
    if reason == reasons.BACKOFF_LIMIT_EXCEEDED:
        assert LOGS in judgement.message


def test_every_pipeline_exit_code_has_an_operator_reason() -> None:
    known = {value for key, value in vars(reasons).items() if key.isupper()}
    assert set(FAILURE_REASONS.values()) <= known
    assert len(set(FAILURE_REASONS)) == len(set(FAILURE_REASONS.values()))  # one reason per code
    assert not {0, 1} & set(FAILURE_REASONS)  # success and an unforeseen exception are not user errors


def test_the_logs_hint_names_the_submitter_job_and_the_ray_job() -> None:
    assert logs_hint("ml", "r-0", "ml-r-0-1a2b3c4d") == "kubectl -n ml logs job/r-0 (Ray job ml-r-0-1a2b3c4d)"
    assert logs_hint("ml", "r-0", None) == "kubectl -n ml logs job/r-0"


@pytest.mark.parametrize(
    ("message", "summary", "code"),
    [
        (
            ray_failed(4, "ERROR: FeatureServiceNotFound: ..."),
            "the entrypoint exited with code 4: ERROR: FeatureServiceNotFound: ...",
            4,
        ),
        ("Job entrypoint command failed with exit code 3. No logs available.", "the entrypoint exited with code 3", 3),
        ("Job entrypoint command failed with exit code -9", "the entrypoint exited with code -9", -9),
        ("worker OOMKilled", "worker OOMKilled", None),
        (
            "The RayJob has passed the activeDeadlineSeconds.\n  StartTime: x",
            "The RayJob has passed the activeDeadlineSeconds. StartTime: x",
            None,
        ),
        ("", "", None),
    ],
)
def test_job_messages_become_one_line_with_the_exit_code(message: str, summary: str, code: int | None) -> None:
    assert job_message(message) == (summary, code)


def test_a_huge_job_message_is_cut_and_never_breaks_the_status() -> None:
    """Ray's message holds up to 20,000 characters of log: a condition's message holds 4096."""
    long = ray_failed(1, "x" * 30_000)
    outcome = failed(long)
    assert len(outcome.message) == MESSAGE_LIMIT and outcome.exit_code == 1
    status = training_status(TrainingRunStatus(), "r-0", {"jobDeploymentStatus": "Failed", "message": long}, 1, "now")
    assert all(len(c.message) <= MESSAGE_LIMIT for c in status.conditions)


def _empties(value: Any, path: str = "status") -> list[str]:
    if value in ("", {}, []):
        return [path]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _empties(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _empties(v, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize(
    "rayjob",
    [
        None,
        {"jobDeploymentStatus": "Initializing", "startTime": "2026-11-22T09:00:00Z"},
        {"jobId": "ml-r-0-1", "jobStatus": "RUNNING", "jobDeploymentStatus": "Running"},
        {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed", "reason": "AppFailed", "message": ray_failed(4)},
        {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": ""},
    ],
)
def test_no_status_field_is_written_empty(rayjob: dict[str, Any] | None) -> None:
    status = training_status(TrainingRunStatus(), "r-0", rayjob, 1, "2026-11-22T10:00:00Z")
    written = status.model_dump(by_alias=True, exclude_none=True)
    assert _empties(written) == [], written
    assert "evaluation" not in written and "modelVersion" not in written and "metrics" not in written
