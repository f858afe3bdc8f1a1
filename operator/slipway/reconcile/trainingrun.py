"""TrainingRun (and BatchPrediction) status from its RayJob's status, the way KubeRay reports it."""

from __future__ import annotations

import re
from typing import Any, NamedTuple, TypeVar

from ..api.batchprediction import BatchPredictionStatus
from ..api.trainingrun import RayJobRef, TrainingPhase, TrainingRunStatus
from . import reasons
from .conditions import set_condition

# KubeRay's status.jobStatus (Ray's job states), status.jobDeploymentStatus and status.reason.
JOB_SUCCEEDED, JOB_RUNNING = "SUCCEEDED", "RUNNING"
JOB_FINAL = (JOB_SUCCEEDED, "FAILED", "STOPPED")
DEPLOYMENT_COMPLETE, DEPLOYMENT_FAILED, DEPLOYMENT_VALIDATION_FAILED = "Complete", "Failed", "ValidationFailed"
# Why KubeRay failed a job that will fail the same way again: not worth a retry.
KUBERAY_DEADLINE_REASONS = ("DeadlineExceeded", "PreRunningDeadlineExceeded")
# What Ray's job supervisor writes for an entrypoint that exited non-zero; KubeRay copies it into
# status.message. The tail is the job's last log lines (up to 20,000 characters).
RAY_ENTRYPOINT_FAILED = re.compile(r"Job entrypoint command failed with exit code (-?\d+)[,.]?(.*)", re.DOTALL)
MESSAGE_LIMIT = 1024  # a condition's message may hold 4096; a one-line summary needs far less
# The status of a kind that runs one RayJob per attempt: the same fields, the same life cycle.
JobStatus = TypeVar("JobStatus", TrainingRunStatus, BatchPredictionStatus)


class Outcome(NamedTuple):
    phase: TrainingPhase
    reason: str
    message: str  # one line, at most MESSAGE_LIMIT characters
    exit_code: int | None = None  # the entrypoint's, when the job's message says it


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` with its whitespace collapsed, cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def job_message(message: str) -> tuple[str, int | None]:
    """A RayJob's message as one line, and the entrypoint's exit code when the message carries it.

    Ray's message for a failed entrypoint holds the job's log tail, often a whole traceback: the
    summary keeps its last line (the exception, or the entrypoint's own last word)."""
    match = RAY_ENTRYPOINT_FAILED.match(message.strip())
    if match is None:
        return one_line(message), None
    code = int(match.group(1))
    tail = match.group(2).split(":", 1)[1] if "last available logs" in match.group(2) else ""
    last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "")
    return one_line(f"the entrypoint exited with code {code}" + (f": {last}" if last else "")), code


def rayjob_outcome(rayjob_status: dict[str, Any] | None) -> Outcome:
    """Pending, Running, Succeeded or Failed, with the reason, from a RayJob's status.

    Only jobDeploymentStatus ends an attempt: in K8sJobMode KubeRay keeps it Running until the
    submitter Job has ended, even once jobStatus is final, and a retry must not start beside an
    attempt that is still winding down. Complete means the Ray job reached a final state
    (SUCCEEDED, or STOPPED); Failed carries KubeRay's reason (AppFailed, SubmissionFailed,
    DeadlineExceeded, ...); ValidationFailed means KubeRay refused the RayJob itself.
    """
    status = rayjob_status or {}
    job = status.get("jobStatus", "")
    deployment = status.get("jobDeploymentStatus", "")
    kuberay_reason = status.get("reason", "")
    message, exit_code = job_message(status.get("message") or "")
    if deployment == DEPLOYMENT_VALIDATION_FAILED:
        return Outcome("Failed", reasons.RAYJOB_INVALID, message or "KubeRay refused the RayJob")
    if deployment == DEPLOYMENT_FAILED:
        if kuberay_reason in KUBERAY_DEADLINE_REASONS:
            return Outcome("Failed", reasons.DEADLINE_EXCEEDED, message or "the run passed activeDeadlineSeconds")
        detail = f" ({kuberay_reason})" if kuberay_reason else ""
        return Outcome("Failed", reasons.RAYJOB_FAILED, message or f"the Ray job failed{detail}", exit_code)
    if deployment == DEPLOYMENT_COMPLETE:
        if job == JOB_SUCCEEDED:
            return Outcome("Succeeded", reasons.RAYJOB_SUCCEEDED, message or "the Ray job succeeded")
        return Outcome(
            "Failed", reasons.RAYJOB_FAILED, message or f"the Ray job ended {job or 'without a state'}", exit_code
        )
    if job == JOB_RUNNING:
        return Outcome("Running", reasons.RAYJOB_RUNNING, message or "the Ray job is running")
    if job in JOB_FINAL:  # but the attempt is not over until KubeRay says so (its submitter Job)
        return Outcome("Running", reasons.RAYJOB_RUNNING, f"the Ray job ended {job}; KubeRay is finishing the attempt")
    return Outcome("Pending", reasons.RAYJOB_PENDING, message or "waiting for the Ray cluster and job to start")


def training_status(
    current: JobStatus,
    rayjob_name: str,
    rayjob_status: dict[str, Any] | None,
    generation: int | None,
    now: str,
) -> JobStatus:
    """The next status of a run (or batch prediction) whose current attempt is `rayjob_name`."""
    status = rayjob_status or {}
    job_times = status.get("rayJobInfo") or {}
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
                job_id=status.get("jobId") or None,
                job_status=status.get("jobStatus") or None,
                job_deployment_status=status.get("jobDeploymentStatus") or None,
            ),
            # The Ray job's own times (rayJobInfo), not the RayJob's: the run started when its code did.
            "start_time": job_times.get("startTime") or status.get("startTime") or current.start_time,
            "completion_time": (job_times.get("endTime") or status.get("endTime") or current.completion_time or now)
            if finished
            else None,
            "message": outcome.message,
        }
    )


def refused_status(
    current: JobStatus, message: str, generation: int | None, now: str, reason: str = reasons.INVALID_SPEC
) -> JobStatus:
    """A run that cannot start (a field unset with no default, a version that does not exist):
    Failed, with the field named."""
    conditions = set_condition(current.conditions, "Failed", "True", reason, message, generation, now)
    return current.model_copy(
        update={
            "phase": "Failed",
            "observed_generation": generation,
            "conditions": conditions,
            "completion_time": now,
            "message": message,
        }
    )


def phase_reason(status: TrainingRunStatus | BatchPredictionStatus) -> str:
    """The reason of the condition that explains the current phase."""
    order = {"Failed": ("Failed",), "Succeeded": ("Complete",), "Pending": ("Running", "Complete")}.get(
        status.phase, ("Running",)
    )
    for kind in order:
        for cond in status.conditions:
            if cond.type == kind:
                return cond.reason
    return status.phase
