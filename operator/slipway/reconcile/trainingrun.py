"""TrainingRun status from its RayJob's status, the way KubeRay reports it."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..api.trainingrun import RayJobRef, TrainingPhase, TrainingRunStatus
from . import reasons
from .conditions import set_condition

# KubeRay's status.jobStatus (Ray's job states) and status.jobDeploymentStatus values.
JOB_SUCCEEDED, JOB_FAILED, JOB_STOPPED, JOB_RUNNING = "SUCCEEDED", "FAILED", "STOPPED", "RUNNING"
DEPLOYMENT_COMPLETE, DEPLOYMENT_FAILED = "Complete", "Failed"
KUBERAY_DEADLINE_REASON = "DeadlineExceeded"


class Outcome(NamedTuple):
    phase: TrainingPhase
    reason: str
    message: str


def rayjob_outcome(rayjob_status: dict[str, Any] | None) -> Outcome:
    """Pending, Running, Succeeded or Failed, with the reason, from a RayJob's status."""
    status = rayjob_status or {}
    job = status.get("jobStatus", "")
    deployment = status.get("jobDeploymentStatus", "")
    message = status.get("message", "")
    if status.get("reason") == KUBERAY_DEADLINE_REASON:
        return Outcome("Failed", reasons.DEADLINE_EXCEEDED, message or "the run passed activeDeadlineSeconds")
    if job == JOB_SUCCEEDED:
        return Outcome("Succeeded", reasons.RAYJOB_SUCCEEDED, message or "the Ray job succeeded")
    if job in (JOB_FAILED, JOB_STOPPED) or deployment == DEPLOYMENT_FAILED:
        return Outcome("Failed", reasons.RAYJOB_FAILED, message or f"the Ray job ended {job or deployment}")
    if job == JOB_RUNNING:
        return Outcome("Running", reasons.RAYJOB_RUNNING, message or "the Ray job is running")
    return Outcome("Pending", reasons.RAYJOB_PENDING, message or "waiting for the Ray cluster and job to start")


def training_status(
    current: TrainingRunStatus,
    rayjob_name: str,
    rayjob_status: dict[str, Any] | None,
    generation: int | None,
    now: str,
) -> TrainingRunStatus:
    """The next status of a run whose current attempt is `rayjob_name`."""
    status = rayjob_status or {}
    outcome = rayjob_outcome(status)
    if current.phase in ("Succeeded", "Failed") and outcome.phase != current.phase:
        return current  # finished runs stay finished; a new attempt starts a new status cycle
    conditions = set_condition(
        current.conditions,
        "Submitted",
        "True",
        reasons.RAYJOB_CREATED,
        f"RayJob {rayjob_name} created",
        generation,
        now,
    )
    running = outcome.phase == "Running"
    conditions = set_condition(
        conditions, "Running", "True" if running else "False", outcome.reason, outcome.message, generation, now
    )
    finished = outcome.phase in ("Succeeded", "Failed")
    conditions = set_condition(
        conditions,
        "Complete",
        "True" if outcome.phase == "Succeeded" else "False",
        outcome.reason,
        outcome.message,
        generation,
        now,
    )
    if outcome.phase == "Failed":
        conditions = set_condition(conditions, "Failed", "True", outcome.reason, outcome.message, generation, now)
    return current.model_copy(
        update={
            "phase": outcome.phase,
            "observed_generation": generation,
            "conditions": conditions,
            "ray_job": RayJobRef(
                name=rayjob_name,
                job_status=status.get("jobStatus", ""),
                job_deployment_status=status.get("jobDeploymentStatus", ""),
            ),
            "start_time": status.get("startTime") or current.start_time,
            "completion_time": (status.get("endTime") or current.completion_time or now) if finished else None,
            "message": outcome.message,
        }
    )


def refused_status(current: TrainingRunStatus, message: str, generation: int | None, now: str) -> TrainingRunStatus:
    """A run that cannot start (a field unset with no default): Failed, with the field named."""
    conditions = set_condition(current.conditions, "Failed", "True", reasons.INVALID_SPEC, message, generation, now)
    return current.model_copy(
        update={
            "phase": "Failed",
            "observed_generation": generation,
            "conditions": conditions,
            "completion_time": now,
            "message": message,
        }
    )
