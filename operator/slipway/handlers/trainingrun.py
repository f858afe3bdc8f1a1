"""TrainingRun -> RayJob, and the RayJob's state lifted back into the run's status."""

from __future__ import annotations

from typing import Any, NamedTuple

import kopf

from ..api.resources import RAY_JOBS, TRAINING_RUN_LABEL, TRAINING_RUNS
from ..api.trainingrun import TrainingRunSpec, TrainingRunStatus
from ..builders.rayjob import build_rayjob
from ..reconcile.conditions import now_rfc3339
from ..reconcile.status import status_patch
from ..reconcile.trainingrun import rayjob_outcome, training_status
from .events import announce, reference
from .metrics import counted, observe_training_run
from .training_finish import finish

FINISHED = ("Succeeded", "Failed")


class RunRecord(NamedTuple):
    owner: kopf.Body
    spec: dict[str, Any]
    status: dict[str, Any]
    generation: int | None


@kopf.index(*TRAINING_RUNS.ref)
def training_runs(
    namespace: str | None, name: str, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> Any:
    """The runs as last seen, so child events need no extra GET."""
    owner = reference(body["apiVersion"], body["kind"], namespace, name, meta["uid"])
    return {(namespace, name): RunRecord(owner, dict(spec), dict(status), meta.get("generation"))}


@kopf.on.resume(*TRAINING_RUNS.ref)
@kopf.on.create(*TRAINING_RUNS.ref)
def start(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Submits the current attempt's RayJob (idempotent: server-side apply, deterministic name)."""
    with counted(TRAINING_RUNS.kind):
        run = TrainingRunSpec.model_validate(dict(spec))
        current = TrainingRunStatus.model_validate(dict(status))
        if current.phase in FINISHED:
            return  # never resubmit a finished run (its RayJob may be gone after its TTL)
        rayjob = build_rayjob(name, namespace or "", run, current.attempt)
        kopf.adopt(rayjob, owner=body)
        observed = memo.kube.apply(RAY_JOBS, rayjob)
        if rayjob_outcome(observed.get("status")).phase in FINISHED:
            return  # the job ended while we were away: its event finishes the run
        desired = training_status(
            current, rayjob["metadata"]["name"], observed.get("status"), meta.get("generation"), now_rfc3339()
        )
        changes = status_patch(dict(status), desired)
        if changes:
            patch.status.update(changes)


@kopf.on.event(*RAY_JOBS.ref, labels={TRAINING_RUN_LABEL: kopf.PRESENT})
def lift_rayjob_status(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any
) -> None:
    run_name, ns = labels[TRAINING_RUN_LABEL], namespace or ""
    with memo.locks[("run", ns, run_name)], counted(RAY_JOBS.kind):
        record: RunRecord | None = next(iter(kwargs["training_runs"].get((ns, run_name), [])), None)
        if record is None:
            return  # the run is gone; garbage collection takes its RayJob
        known = memo.written.get(record.owner["metadata"]["uid"], record.status)
        current = TrainingRunStatus.model_validate(known)
        if current.ray_job.name != body["metadata"]["name"] or current.phase in FINISHED:
            return  # not recorded yet (the create handler writes it), an older attempt, or done
        now = now_rfc3339()
        desired = training_status(current, current.ray_job.name, body.get("status"), record.generation, now)
        outcome = rayjob_outcome(body.get("status"))
        if outcome.phase in FINISHED:
            run = TrainingRunSpec.model_validate(record.spec)
            desired = finish(memo, ns, run_name, record.owner, run, desired, outcome, kwargs, now)
        changes = status_patch(known, desired)
        if not changes:
            return
        memo.kube.patch_status(TRAINING_RUNS, ns, run_name, changes)
        memo.written[record.owner["metadata"]["uid"]] = desired.model_dump(by_alias=True, exclude_none=True)
        if desired.phase != current.phase or desired.attempt != current.attempt:
            reason = _reason(desired)
            announce(record.owner, desired.phase == "Failed", reason, desired.message)


def _reason(status: TrainingRunStatus) -> str:
    """The reason of the condition that explains the current phase."""
    order = {"Failed": ("Failed",), "Succeeded": ("Complete",), "Pending": ("Running", "Complete")}.get(
        status.phase, ("Running",)
    )
    for kind in order:
        for cond in status.conditions:
            if cond.type == kind:
                return cond.reason
    return status.phase


@kopf.on.event(*TRAINING_RUNS.ref)
def count_by_phase(type: str, namespace: str | None, name: str, status: kopf.Status, **_: Any) -> None:
    """Feeds the slipway_training_runs gauge."""
    gone = type == "DELETED"
    observe_training_run(namespace or "", name, None if gone else str(status.get("phase", "Pending")))
