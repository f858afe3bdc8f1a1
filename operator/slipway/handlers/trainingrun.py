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
from .events import announce, owner_of
from .metrics import counted

FINISHED = ("Succeeded", "Failed")


class RunRecord(NamedTuple):
    status: dict[str, Any]
    generation: int | None


@kopf.index(*TRAINING_RUNS.ref)
def training_runs(namespace: str | None, name: str, status: kopf.Status, meta: kopf.Meta, **_: Any) -> Any:
    """The runs' last known status, so child events need no extra GET."""
    return {(namespace, name): RunRecord(dict(status), meta.get("generation"))}


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
    with counted(TRAINING_RUNS.kind):
        _start(name, namespace or "", spec, status, meta, body, patch, memo)


def _start(
    name: str,
    namespace: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
) -> None:
    run = TrainingRunSpec.model_validate(dict(spec))
    current = TrainingRunStatus.model_validate(dict(status))
    if current.phase in FINISHED:
        return  # never resubmit a finished run (its RayJob may be gone after its TTL)
    rayjob = build_rayjob(name, namespace, run, current.attempt)
    kopf.adopt(rayjob, owner=body)
    observed = memo.kube.apply(RAY_JOBS, rayjob)
    desired = training_status(
        current, rayjob["metadata"]["name"], observed.get("status"), meta.get("generation"), now_rfc3339()
    )
    changes = status_patch(dict(status), desired)
    if changes:
        patch.status.update(changes)
    if current.ray_job.name and desired.phase != current.phase:  # a transition, not the first status
        announce(body, desired.phase == "Failed", rayjob_outcome(observed.get("status")).reason, desired.message)


@kopf.on.event(*RAY_JOBS.ref, labels={TRAINING_RUN_LABEL: kopf.PRESENT})
def lift_rayjob_status(
    body: kopf.Body,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    run_name = labels[TRAINING_RUN_LABEL]
    record: RunRecord | None = next(iter(kwargs["training_runs"].get((namespace, run_name), [])), None)
    if record is None:
        return  # the run is gone; garbage collection takes its RayJob
    current = TrainingRunStatus.model_validate(record.status)
    if current.ray_job.name != body["metadata"]["name"]:
        return  # not recorded yet (the create handler writes it) or an older attempt
    desired = training_status(current, current.ray_job.name, body.get("status"), record.generation, now_rfc3339())
    changes = status_patch(record.status, desired)
    if not changes:
        return
    memo.kube.patch_status(TRAINING_RUNS, namespace or "", run_name, changes)
    if desired.phase != current.phase:
        reason = rayjob_outcome(body.get("status")).reason
        announce(owner_of(body, TRAINING_RUNS.kind), desired.phase == "Failed", reason, desired.message)
