"""A finished attempt: read what the pipeline wrote, apply the gate, then register, retry or fail."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kopf

from ..api.artifacts import (
    FAILURE_FILE,
    MANIFEST_FILE,
    VALIDATION_FILE,
    Manifest,
    RunFailure,
    ValidationReport,
    run_uri,
)
from ..api.modelversion import Gates, ModelVersionSpec
from ..api.resources import MODEL_VERSIONS, RAY_JOBS, TRAINING_RUNS
from ..api.trainingrun import EvaluationResult, RayJobRef, TrainingRunSpec, TrainingRunStatus
from ..builders.modelversion import build_model_version
from ..builders.rayjob import build_rayjob
from ..reconcile import reasons
from ..reconcile.conditions import set_condition
from ..reconcile.gates import GateVerdict, evaluate_gate
from ..reconcile.registry import model_version_name, serving_baseline
from ..reconcile.training import judge, logs_hint
from ..reconcile.trainingrun import Outcome
from ..storage import read_model
from .views import entries


def finish(
    memo: kopf.Memo,
    namespace: str,
    run_name: str,
    owner: kopf.Body,
    run: TrainingRunSpec,
    lifted: TrainingRunStatus,
    outcome: Outcome,
    indexes: dict[str, Any],
    now: str,
) -> TrainingRunStatus:
    """The run's status after its current attempt ended with `outcome` (Succeeded or Failed)."""
    artifacts = run_uri(run.artifacts.uri, run_name)
    failed = outcome.phase == "Failed"
    validation = read_model(artifacts + VALIDATION_FILE, ValidationReport).value if failed else None
    failure = read_model(artifacts + FAILURE_FILE, RunFailure).value if failed else None
    read = read_model(artifacts + MANIFEST_FILE, Manifest) if not failed else None
    manifest = read.value if read else None
    job = lifted.ray_job
    logs = logs_hint(namespace, job.name, job.job_id) if job else ""
    versions = entries(indexes["model_versions"], (namespace, run.model))
    stable = served_version(indexes, namespace, run.model)
    serving = serving_baseline(stable, versions, run.evaluation.metric, manifest.serving if manifest else None)
    verdict = evaluate_gate(run.evaluation, manifest.metrics, serving) if manifest else None
    judgement = judge(run, lifted.attempt, outcome, validation, manifest, verdict, failure, artifacts, logs)
    if read is not None and read.problem:
        judgement = judgement._replace(message=f"{judgement.message}: {read.problem}")
    generation = lifted.observed_generation
    conditions = lifted.conditions
    update: dict[str, Any] = {"artifacts": artifacts, "message": judgement.message}
    if manifest is not None:
        update["metrics"] = {key: f"{value:.6g}" for key, value in sorted(manifest.metrics.items())} or None
        update["lineage"] = manifest.lineage
    if verdict is not None:
        baseline = verdict.baseline
        update["evaluation"] = EvaluationResult(
            metric=verdict.metric,
            value=verdict.value,
            passed=verdict.passed,
            serving_version=baseline.version if baseline else None,
            serving_value=baseline.value if baseline else None,
            compared_on=("thisRunsData" if baseline.on_this_data else "recordedMetric") if baseline else None,
        )
        conditions = set_condition(
            conditions,
            "GatesPassed",
            "True" if verdict.passed else "False",
            reasons.GATES_PASSED if verdict.passed else reasons.GATE_FAILED,
            verdict.message,
            generation,
            now,
        )

    if judgement.action == "retry":
        attempt = lifted.attempt + 1
        rayjob = build_rayjob(run_name, namespace, run, attempt, lifted.serving_model)
        kopf.adopt(rayjob, owner=owner)
        memo.kube.apply(RAY_JOBS, rayjob)
        conditions = set_condition(conditions, "Running", "False", reasons.RETRYING, judgement.message, generation, now)
        conditions = set_condition(
            conditions, "Complete", "False", reasons.RETRYING, judgement.message, generation, now
        )
        # The attempt that failed is history now; the run as a whole has not failed.
        conditions = set_condition(conditions, "Failed", "False", reasons.RETRYING, judgement.message, generation, now)
        return lifted.model_copy(
            update={
                **update,
                "phase": "Pending",
                "attempt": attempt,
                "ray_job": RayJobRef(name=rayjob["metadata"]["name"]),
                "completion_time": None,
                "conditions": conditions,
            }
        )

    if judgement.action == "register":
        assert manifest is not None and verdict is not None
        version = _register(memo, namespace, run_name, run, lifted, artifacts, manifest, verdict, versions)
        conditions = set_condition(
            conditions, "Complete", "True", reasons.MODEL_REGISTERED, judgement.message, generation, now
        )
        return lifted.model_copy(
            update={
                **update,
                "phase": "Succeeded",
                "model_version": model_version_name(run.model, version),
                "message": f"registered {model_version_name(run.model, version)}: {judgement.message}",
                "conditions": conditions,
            }
        )

    conditions = set_condition(conditions, "Complete", "False", judgement.reason, judgement.message, generation, now)
    conditions = set_condition(conditions, "Failed", "True", judgement.reason, judgement.message, generation, now)
    return lifted.model_copy(update={**update, "phase": "Failed", "conditions": conditions})


def _recorded_version(memo: kopf.Memo, namespace: str, run_name: str) -> str | None:
    """The run's status.modelVersion as the API server has it now (a read, not the watch's view)."""
    for live in memo.kube.list_objects(TRAINING_RUNS, namespace, f"metadata.name={run_name}"):
        recorded = (live.get("status") or {}).get("modelVersion")
        return str(recorded) if recorded else None
    return None


def _register(
    memo: kopf.Memo,
    namespace: str,
    run_name: str,
    run: TrainingRunSpec,
    lifted: TrainingRunStatus,
    artifacts: str,
    manifest: Manifest,
    verdict: GateVerdict,
    versions: Sequence[ModelVersionSpec],
) -> int:
    """Creates this run's ModelVersion exactly once.

    The number is recorded in the run's status before the ModelVersion is created, so an
    operator that dies in between creates the same one after its restart, never a second. The
    status is read as it is now before a number is handed out: a standby that takes over may see
    the run as it was before its pause, unregistered though the other replica registered it.
    """
    recorded_as = lifted.model_version or _recorded_version(memo, namespace, run_name)
    if recorded_as:
        number = int(recorded_as.rsplit("-v", 1)[1])
    else:
        floor = max((v.version for v in versions), default=0)
        number = memo.kube.allocate_version(namespace, run.model, floor=floor)
        recorded = {"modelVersion": model_version_name(run.model, number)}
        memo.kube.patch_status(TRAINING_RUNS, namespace, run_name, recorded)
    reason = f"passed data validation and the evaluation gate: {verdict.message}"
    gates = Gates(passed=True, metric=verdict.metric, value=verdict.value, reason=reason[:1024])
    body = build_model_version(
        model_version_name(run.model, number), namespace, run_name, run.model, number, artifacts, manifest, gates
    )
    # No owner reference: deleting a run must not delete the registry's record of its model.
    memo.kube.create(MODEL_VERSIONS, body)  # False (already there) after a restart: fine
    return int(number)


def served_version(indexes: dict[str, Any], namespace: str, model: str) -> int | None:
    """The stable version the model's deployment serves (the first indexed, if several)."""
    return next(iter(entries(indexes["served_versions"], (namespace, model))), None)
