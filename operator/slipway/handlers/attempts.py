"""What every kind that runs one RayJob per attempt (TrainingRun, BatchPrediction) does alike in
its handlers: find the parent a RayJob event is about, and write the parent's status from it."""

from __future__ import annotations

from typing import Any, NamedTuple

import kopf

from ..api.batchprediction import BatchPredictionStatus
from ..api.resources import Resource
from ..api.trainingrun import TrainingRunStatus
from ..reconcile.status import status_patch
from ..reconcile.trainingrun import phase_reason
from .events import announce, reference

FINISHED = ("Succeeded", "Failed")


class RunRecord(NamedTuple):
    """A parent as its index keeps it, so child events need no extra GET."""

    owner: kopf.Body
    spec: dict[str, Any]
    status: dict[str, Any]
    generation: int | None


def run_record(
    namespace: str | None, name: str, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta
) -> RunRecord:
    """The record of a parent from a handler's arguments."""
    owner = reference(body["apiVersion"], body["kind"], namespace, name, meta["uid"])
    return RunRecord(owner, dict(spec), dict(status), meta.get("generation"))


def attempt_of(
    memo: kopf.Memo, records: Any, namespace: str, name: str, job_name: str
) -> tuple[RunRecord, dict[str, Any]] | None:
    """The record and known status of parent `name` when RayJob `job_name` is its current attempt
    and it is not finished; None for an older attempt's job, a finished or a deleted parent (whose
    RayJobs garbage collection takes). The caller holds the parent's lock."""
    record: RunRecord | None = next(iter(records.get((namespace, name), [])), None)
    if record is None:
        return None
    known: dict[str, Any] = memo.written.get(record.owner["metadata"]["uid"], record.status)
    job = known.get("rayJob") or {}
    if job.get("name") != job_name or known.get("phase") in FINISHED:
        return None
    return record, known


def write_status(
    memo: kopf.Memo,
    resource: Resource,
    namespace: str,
    name: str,
    owner: kopf.Body,
    known: dict[str, Any],
    desired: TrainingRunStatus | BatchPredictionStatus,
) -> bool:
    """Patches the status from `known` to `desired` (nothing when they agree), remembers it in
    memo.written, and announces a new phase or attempt; False when there was nothing to write."""
    changes = status_patch(known, desired)
    if not changes:
        return False
    memo.kube.patch_status(resource, namespace, name, changes)
    memo.written[owner["metadata"]["uid"]] = desired.model_dump(by_alias=True, exclude_none=True)
    phase, attempt = known.get("phase", "Pending"), known.get("attempt", 0)
    if desired.phase != phase or desired.attempt != attempt:
        announce(owner, desired.phase == "Failed", phase_reason(desired), desired.message or desired.phase)
    return True
