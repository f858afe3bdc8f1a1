"""RayJob status (as KubeRay writes it) -> TrainingRun phase, conditions and times."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.api.trainingrun import TrainingRunStatus
from slipway.reconcile import reasons
from slipway.reconcile.conditions import condition
from slipway.reconcile.trainingrun import rayjob_outcome, training_status

NOW = "2026-11-22T10:00:00Z"


@pytest.mark.parametrize(
    ("status", "phase", "reason"),
    [
        (None, "Pending", reasons.RAYJOB_PENDING),
        ({}, "Pending", reasons.RAYJOB_PENDING),
        ({"jobDeploymentStatus": "Initializing"}, "Pending", reasons.RAYJOB_PENDING),
        ({"jobStatus": "PENDING", "jobDeploymentStatus": "Running"}, "Pending", reasons.RAYJOB_PENDING),
        ({"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}, "Running", reasons.RAYJOB_RUNNING),
        ({"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}, "Succeeded", reasons.RAYJOB_SUCCEEDED),
        # K8sJobMode: the Ray job is over, its submitter Job is not; no retry may start yet.
        ({"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Running"}, "Running", reasons.RAYJOB_RUNNING),
        ({"jobStatus": "FAILED", "jobDeploymentStatus": "Running"}, "Running", reasons.RAYJOB_RUNNING),
        # What KubeRay writes for a failed Ray job.
        (
            {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed", "reason": "AppFailed"},
            "Failed",
            reasons.RAYJOB_FAILED,
        ),
        ({"jobDeploymentStatus": "Failed", "reason": "SubmissionFailed"}, "Failed", reasons.RAYJOB_FAILED),
        ({"jobStatus": "STOPPED", "jobDeploymentStatus": "Complete"}, "Failed", reasons.RAYJOB_FAILED),
        ({"jobDeploymentStatus": "Failed"}, "Failed", reasons.RAYJOB_FAILED),
        # At the deadline KubeRay leaves jobStatus as it was (often empty) and says why in reason.
        (
            {"jobStatus": "", "jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"},
            "Failed",
            reasons.DEADLINE_EXCEEDED,
        ),
        (
            {"jobStatus": "RUNNING", "jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"},
            "Failed",
            reasons.DEADLINE_EXCEEDED,
        ),
        (
            {"jobDeploymentStatus": "Failed", "reason": "PreRunningDeadlineExceeded"},
            "Failed",
            reasons.DEADLINE_EXCEEDED,
        ),
        # KubeRay refused the RayJob (an invalid name, say): it would refuse a retry too.
        ({"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed"}, "Failed", reasons.RAYJOB_INVALID),
    ],
)
def test_outcome_from_kuberay_status(status: dict[str, Any] | None, phase: str, reason: str) -> None:
    outcome = rayjob_outcome(status)
    assert (outcome.phase, outcome.reason) == (phase, reason)
    assert outcome.message


def test_message_from_kuberay_is_kept() -> None:
    failed = {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed", "reason": "AppFailed", "message": "OOMKilled"}
    assert rayjob_outcome(failed).message == "OOMKilled"


def test_running_then_succeeded_fills_times_and_conditions() -> None:
    start = TrainingRunStatus()
    running = training_status(
        start,
        "run-0",
        {
            "jobStatus": "RUNNING",
            "jobDeploymentStatus": "Running",
            "startTime": "2026-11-22T08:58:00Z",  # the RayJob's, from before its cluster was up
            "rayJobInfo": {"startTime": "2026-11-22T09:00:00Z"},  # the Ray job's own
        },
        1,
        NOW,
    )
    assert running.phase == "Running"
    assert running.start_time == "2026-11-22T09:00:00Z"
    assert running.completion_time is None
    assert running.ray_job.name == "run-0" and running.ray_job.job_status == "RUNNING"
    assert condition(running.conditions, "Running").status == "True"  # type: ignore[union-attr]
    assert condition(running.conditions, "Submitted").status == "True"  # type: ignore[union-attr]

    done = training_status(
        running,
        "run-0",
        {
            "jobStatus": "SUCCEEDED",
            "jobDeploymentStatus": "Complete",
            "endTime": "2026-11-22T09:31:00Z",
            "rayJobInfo": {"startTime": "2026-11-22T09:00:00Z", "endTime": "2026-11-22T09:30:00Z"},
        },
        1,
        "2026-11-22T10:05:00Z",
    )
    assert done.phase == "Succeeded"
    assert done.start_time == "2026-11-22T09:00:00Z"  # kept when KubeRay stops repeating it
    assert done.completion_time == "2026-11-22T09:30:00Z"
    complete = condition(done.conditions, "Complete")
    assert complete is not None and complete.status == "True"
    assert condition(done.conditions, "Running").status == "False"  # type: ignore[union-attr]
    # Submitted did not flip, so its transition time stays the first one.
    assert condition(done.conditions, "Submitted").last_transition_time == NOW  # type: ignore[union-attr]


def test_failure_sets_the_failed_condition_with_reason() -> None:
    failed = training_status(
        TrainingRunStatus(), "run-0", {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}, 3, NOW
    )
    assert failed.phase == "Failed"
    cond = condition(failed.conditions, "Failed")
    assert cond is not None and cond.reason == reasons.DEADLINE_EXCEEDED and cond.observed_generation == 3
    assert failed.completion_time == NOW


def test_a_finished_run_never_goes_back() -> None:
    done = training_status(
        TrainingRunStatus(), "run-0", {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}, 1, NOW
    )
    # The RayJob was deleted after its TTL: its status disappears, the run's result must not.
    assert training_status(done, "run-0", None, 1, NOW) == done


def test_same_observation_twice_is_a_fixed_point() -> None:
    once = training_status(TrainingRunStatus(), "run-0", {"jobStatus": "RUNNING"}, 1, NOW)
    twice = training_status(once, "run-0", {"jobStatus": "RUNNING"}, 1, "2026-11-22T11:00:00Z")
    assert twice == once
