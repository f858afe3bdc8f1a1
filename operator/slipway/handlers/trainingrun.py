"""TrainingRun -> RayJob, and the RayJob's state lifted back into the run's status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ..api.defaults import MissingField
from ..api.resources import RAY_JOBS, TRAINING_RUN_LABEL, TRAINING_RUNS
from ..api.trainingrun import ServingModel, TrainingRunSpec, TrainingRunStatus
from ..builders.rayjob import build_rayjob
from ..reconcile import reasons
from ..reconcile.conditions import now_rfc3339
from ..reconcile.registry import serving_model
from ..reconcile.status import status_patch
from ..reconcile.trainingrun import rayjob_outcome, refused_status, training_status
from .attempts import FINISHED, attempt_of, run_record, write_status
from .events import announce, reference
from .metrics import counted, observe_training_run
from .retries import outlasting_restarts
from .training_finish import finish, served_version
from .views import entries


@kopf.index(*TRAINING_RUNS.ref)
async def training_runs(
    namespace: str | None, name: str, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> Any:
    """The runs as last seen, so child events need no extra GET."""
    return {(namespace, name): run_record(namespace, name, body, spec, status, meta)}


@kopf.on.resume(*TRAINING_RUNS.ref)
@kopf.on.create(*TRAINING_RUNS.ref)
def start(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Submits the current attempt's RayJob (idempotent: server-side apply, deterministic name).

    Under the run's lock, and the RayJob's name is written before the lock is let go: a RayJob
    event that comes in meanwhile (the job may end at once, or have ended while the operator was
    away) then finds its run's status knowing the job, instead of being dropped as unknown.
    """
    ns = namespace or ""
    owner = reference(body["apiVersion"], body["kind"], namespace, name, meta["uid"])
    with memo.locks[("run", ns, name)], counted(TRAINING_RUNS.kind):
        known = memo.written.get(meta["uid"], dict(status))
        if TrainingRunStatus.model_validate(known).phase in FINISHED:
            return  # never resubmit a finished run (its RayJob may be gone after its TTL)
        try:
            run = memo.defaults.run(TrainingRunSpec.model_validate(dict(spec)))
        except MissingField as error:  # nothing to submit: the run fails, naming the field
            current = TrainingRunStatus.model_validate(known)
            refused = refused_status(current, str(error), meta.get("generation"), now_rfc3339())
            memo.kube.patch_status(TRAINING_RUNS, ns, name, status_patch(known, refused))
            memo.written[meta["uid"]] = refused.model_dump(by_alias=True, exclude_none=True)
            announce(owner, True, reasons.INVALID_SPEC, str(error))
            return
        attempt = TrainingRunStatus.model_validate(known).attempt
        known, serving = pin_serving_model(memo, ns, name, run, known, kwargs)
        rayjob = build_rayjob(name, ns, run, attempt, serving)
        kopf.adopt(rayjob, owner=body)
        observed = memo.kube.apply(RAY_JOBS, rayjob)
        advance(memo, ns, name, owner, run, known, rayjob["metadata"]["name"], observed, meta.get("generation"), kwargs)


def pin_serving_model(
    memo: kopf.Memo, namespace: str, name: str, run: TrainingRunSpec, known: dict[str, Any], indexes: dict[str, Any]
) -> tuple[dict[str, Any], ServingModel | None]:
    """The version the job scores beside its own model (for mustBeatServing, and shown without it),
    recorded in status before the first RayJob is made: every attempt, and a resume after a
    restart, compares with the same version even if a rollout changed what serves meanwhile."""
    pinned = TrainingRunStatus.model_validate(known).serving_model
    if pinned is not None or known.get("rayJob"):
        return known, pinned
    versions = entries(indexes["model_versions"], (namespace, run.model))
    found = serving_model(served_version(indexes, namespace, run.model), versions)
    if found is None:
        return known, None
    recorded = found.model_dump(by_alias=True)
    memo.kube.patch_status(TRAINING_RUNS, namespace, name, {"servingModel": recorded})
    return {**known, "servingModel": recorded}, found


def advance(
    memo: kopf.Memo,
    namespace: str,
    run_name: str,
    owner: kopf.Body,
    run: TrainingRunSpec,
    known: dict[str, Any],
    job_name: str,
    job: Mapping[str, Any],
    generation: int | None,
    indexes: dict[str, Any],
) -> None:
    """Writes the run's status from its RayJob `job` (finishing the run when the job ended).

    The caller holds the run's lock; what is written is remembered in memo.written, so the next
    event under the lock starts from it even before the watch shows it."""
    current = TrainingRunStatus.model_validate(known)
    now = now_rfc3339()
    desired = training_status(current, job_name, job.get("status"), generation, now)
    outcome = rayjob_outcome(job.get("status"))
    if outcome.phase in FINISHED:
        desired = finish(memo, namespace, run_name, owner, run, desired, outcome, indexes, now)
    write_status(memo, TRAINING_RUNS, namespace, run_name, owner, known, desired)


@kopf.on.event(*RAY_JOBS.ref, labels={TRAINING_RUN_LABEL: kopf.PRESENT})
@outlasting_restarts
def lift_rayjob_status(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any
) -> None:
    run_name, ns = labels[TRAINING_RUN_LABEL], namespace or ""
    with memo.locks[("run", ns, run_name)], counted(RAY_JOBS.kind):
        job_name = body["metadata"]["name"]
        found = attempt_of(memo, kwargs["training_runs"], ns, run_name, job_name)
        if found is None:
            return
        record, known = found
        run = memo.defaults.run(TrainingRunSpec.model_validate(record.spec))
        advance(memo, ns, run_name, record.owner, run, known, job_name, body, record.generation, kwargs)


@kopf.on.event(*TRAINING_RUNS.ref)
async def count_by_phase(type: str, namespace: str | None, name: str, status: kopf.Status, **_: Any) -> None:
    """Feeds the slipway_training_runs gauge (async: a dict update needs no handler thread)."""
    gone = type == "DELETED"
    observe_training_run(namespace or "", name, None if gone else str(status.get("phase", "Pending")))
