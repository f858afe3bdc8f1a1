"""BatchPrediction -> RayJob, and the RayJob's state lifted back into the prediction's status.

The same pattern as a TrainingRun's handlers: under the prediction's lock, the status is patched
directly (never through Kopf's patch, which lands after the lock is let go) and remembered in
memo.written, so the next event under the lock starts from what was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ..api.artifacts import RunFailure
from ..api.batchprediction import (
    BATCH_FAILURE_FILE,
    BATCH_MANIFEST_FILE,
    BatchManifest,
    BatchPredictionSpec,
    BatchPredictionStatus,
    output_file,
)
from ..api.defaults import MissingField
from ..api.modelversion import ModelVersionSpec
from ..api.resources import BATCH_PREDICTION_LABEL, BATCH_PREDICTIONS, MODEL_VERSIONS, RAY_JOBS
from ..builders.batchprediction import build_batch_rayjob
from ..reconcile.batchprediction import finished_status, resolve, resolved_status, unresolved_status
from ..reconcile.conditions import now_rfc3339
from ..reconcile.training import logs_hint
from ..reconcile.trainingrun import Outcome, rayjob_outcome, refused_status, training_status
from ..storage import read_model
from .attempts import FINISHED, RunRecord, attempt_of, run_record, write_status
from .events import announce
from .metrics import counted
from .retries import outlasting_restarts
from .views import entries


@kopf.index(*BATCH_PREDICTIONS.ref)
async def batch_predictions(
    namespace: str | None, name: str, body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> Any:
    """The predictions as last seen, so RayJob events need no extra GET."""
    return {(namespace, name): run_record(namespace, name, body, spec, status, meta)}


def model_versions(memo: kopf.Memo, namespace: str, model: str) -> dict[str, ModelVersionSpec]:
    """The model's ModelVersions by name, read from the API server rather than the watch: a
    version applied together with the prediction must not be missed by a watch that lags."""
    items = memo.kube.list_objects(MODEL_VERSIONS, namespace, field_selector=f"spec.model={model}")
    return {item["metadata"]["name"]: ModelVersionSpec.model_validate(item["spec"]) for item in items}


@kopf.index(*BATCH_PREDICTIONS.ref)
async def batch_predictions_by_model(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> Any:
    return {(namespace, spec.get("model")): name}


@kopf.on.resume(*BATCH_PREDICTIONS.ref)
@kopf.on.create(*BATCH_PREDICTIONS.ref)
def start(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    submit(memo, namespace or "", name, run_record(namespace, name, body, spec, status, meta))


@kopf.on.event(*MODEL_VERSIONS.ref)
@outlasting_restarts
def version_registered(type: str, namespace: str | None, spec: kopf.Spec, memo: kopf.Memo, **kwargs: Any) -> None:
    """A new version may be the one a waiting prediction of the same model asked for."""
    if type is None:
        return  # the initial listing: the predictions' own resume handlers look for themselves
    ns = namespace or ""
    for name in entries(kwargs["batch_predictions_by_model"], (namespace, spec.get("model"))):
        for record in entries(kwargs["batch_predictions"], (namespace, name)):
            if not (record.status or {}).get("modelVersion"):
                submit(memo, ns, name, record)


def submit(memo: kopf.Memo, ns: str, name: str, record: RunRecord) -> None:
    """Resolves the version (once: it is recorded in status before the first RayJob is made) and
    submits the current attempt's RayJob (idempotent: server-side apply, deterministic name)."""
    owner, generation = record.owner, record.generation
    with memo.locks[("batch", ns, name)], counted(BATCH_PREDICTIONS.kind):
        known = memo.written.get(owner["metadata"]["uid"], record.status)
        current = BatchPredictionStatus.model_validate(known)
        if current.phase in FINISHED:
            return  # never resubmit a finished prediction (its RayJob may be gone after its TTL)
        try:
            prediction = memo.defaults.run(BatchPredictionSpec.model_validate(record.spec))
        except MissingField as error:  # nothing to submit: the prediction fails, naming the field
            refused = refused_status(current, str(error), generation, now_rfc3339())
            write_status(memo, BATCH_PREDICTIONS, ns, name, owner, known, refused)  # announces the failure
            return
        recorded = current.model_version
        resolution = resolve(prediction, model_versions(memo, ns, prediction.model), recorded)
        if resolution.version is None:  # no job is started
            desired = unresolved_status(current, resolution, recorded, generation, now_rfc3339())
            written = write_status(memo, BATCH_PREDICTIONS, ns, name, owner, known, desired)
            if written and desired.phase == current.phase:  # still waiting, for a reason that changed
                announce(owner, True, resolution.reason, resolution.message)
            return
        if recorded is None:
            resolved = resolved_status(current, name, resolution, generation, now_rfc3339())
            write_status(memo, BATCH_PREDICTIONS, ns, name, owner, known, resolved)
            announce(owner, False, resolution.reason, resolution.message)
            known = resolved.model_dump(by_alias=True, exclude_none=True)
        rayjob = build_batch_rayjob(name, ns, prediction, current.attempt, resolution.version)
        kopf.adopt(rayjob, owner=owner)
        observed = memo.kube.apply(RAY_JOBS, rayjob)
        advance(memo, ns, name, owner, prediction, known, rayjob["metadata"]["name"], observed, generation)


def advance(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    owner: kopf.Body,
    prediction: BatchPredictionSpec,
    known: dict[str, Any],
    job_name: str,
    job: Mapping[str, Any],
    generation: int | None,
) -> None:
    """Writes the prediction's status from its RayJob `job`, finishing it when the job ended. The
    caller holds the prediction's lock; what is written is remembered in memo.written."""
    current = BatchPredictionStatus.model_validate(known)
    now = now_rfc3339()
    desired = training_status(current, job_name, job.get("status"), generation, now)
    outcome = rayjob_outcome(job.get("status"))
    if outcome.phase in FINISHED:
        desired = finish(memo, namespace, name, owner, prediction, desired, outcome, now)
    write_status(memo, BATCH_PREDICTIONS, namespace, name, owner, known, desired)


def finish(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    owner: kopf.Body,
    prediction: BatchPredictionSpec,
    lifted: BatchPredictionStatus,
    outcome: Outcome,
    now: str,
) -> BatchPredictionStatus:
    """Reads what the job left in spec.output.uri, judges the attempt and, for a retry, submits the
    next attempt's RayJob with the version recorded at the start."""
    failed = outcome.phase == "Failed"
    failure = read_model(output_file(prediction.output.uri, BATCH_FAILURE_FILE), RunFailure).value if failed else None
    read = None if failed else read_model(output_file(prediction.output.uri, BATCH_MANIFEST_FILE), BatchManifest)
    job = lifted.ray_job
    logs = logs_hint(namespace, job.name, job.job_id) if job else ""
    manifest, problem = (read.value, read.problem) if read else (None, "")
    desired = finished_status(name, prediction, lifted, outcome, failure, manifest, problem, logs, now)
    if desired.attempt == lifted.attempt:
        return desired
    resolution = resolve(prediction, model_versions(memo, namespace, prediction.model), lifted.model_version)
    if resolution.version is None:  # the recorded version was deleted since: nothing to retry with
        return refused_status(lifted, resolution.message, lifted.observed_generation, now, resolution.reason)
    rayjob = build_batch_rayjob(name, namespace, prediction, desired.attempt, resolution.version)
    kopf.adopt(rayjob, owner=owner)
    memo.kube.apply(RAY_JOBS, rayjob)
    return desired


@kopf.on.event(*RAY_JOBS.ref, labels={BATCH_PREDICTION_LABEL: kopf.PRESENT})
@outlasting_restarts
def lift_batch_rayjob_status(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any
) -> None:
    name, ns = labels[BATCH_PREDICTION_LABEL], namespace or ""
    with memo.locks[("batch", ns, name)], counted(RAY_JOBS.kind):
        job_name = body["metadata"]["name"]
        found = attempt_of(memo, kwargs["batch_predictions"], ns, name, job_name)
        if found is None:
            return
        record, known = found
        prediction = memo.defaults.run(BatchPredictionSpec.model_validate(record.spec))
        advance(memo, ns, name, record.owner, prediction, known, job_name, body, record.generation)
