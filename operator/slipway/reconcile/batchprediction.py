"""A BatchPrediction's life cycle: resolve the version once, follow the RayJob, judge how it ended.

The RayJob's status is lifted as a TrainingRun's is (`training_status`), and a failed attempt is
judged by the same taxonomy (`judge_failure`): what the user must fix (a missing dataset, column,
feature service or an unwritable output) fails at once with a message naming the field; what time
may fix is retried up to spec.backoffLimit, each attempt a new RayJob.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from ..api.artifacts import (
    EXIT_ARTIFACTS_UNWRITABLE,
    EXIT_COLUMN_NOT_FOUND,
    EXIT_CONFIG,
    EXIT_DATASET_NOT_FOUND,
    EXIT_FEATURE_SERVICE_NOT_FOUND,
    RunFailure,
)
from ..api.batchprediction import (
    BATCH_FAILURE_REASONS,
    BATCH_MANIFEST_FILE,
    BatchManifest,
    BatchPredictionSpec,
    BatchPredictionStatus,
    ResolvedVersion,
)
from ..api.modelversion import Lineage, ModelVersionSpec
from ..api.trainingrun import RayJobRef
from ..builders.rayjob import rayjob_name
from . import reasons
from .conditions import set_condition
from .training import Judgement, UserError, error_for_code, judge_failure, reported_error
from .trainingrun import Outcome, refused_status
from .versions import gates_passed, resolve_version


class Resolution(NamedTuple):
    version: ResolvedVersion | None  # None: the prediction cannot start (reason and message say why)
    lineage: Lineage | None
    reason: str
    message: str


def describe_versions(model: str, versions: Mapping[str, ModelVersionSpec]) -> str:
    """The versions there are, for a message: 'ModelVersions of churn: churn-v1 (1), churn-v2 (2, failed its gates)'."""
    known = sorted(((v.version, name, gates_passed(v)) for name, v in versions.items() if v.model == model))
    if not known:
        return f"model {model} has no ModelVersion in this namespace"
    listed = ", ".join(f"{name} ({number}{'' if passed else ', failed its gates'})" for number, name, passed in known)
    return f"ModelVersions of {model}: {listed}"


def resolve(spec: BatchPredictionSpec, versions: Mapping[str, ModelVersionSpec], recorded: str | None) -> Resolution:
    """The version to score with, from the ModelVersions by name: the one `recorded` in status when
    the prediction started (so a newer version never changes a prediction under way), else
    spec.version resolved as a ModelDeployment resolves it ('latest': the newest that passed its gates)."""
    if recorded is not None:
        version = versions.get(recorded)
        if version is None:
            return Resolution(
                None,
                None,
                reasons.VERSION_NOT_FOUND,
                f'status.modelVersion "{recorded}": the ModelVersion spec.version "{spec.version}" was resolved to '
                f"is gone; {describe_versions(spec.model, versions)}",
            )
        name = recorded
    else:
        found = resolve_version(spec.model, spec.version, versions.values())
        if found.version is None:
            listing = describe_versions(spec.model, versions)
            return Resolution(None, None, found.reason, f'spec.version "{spec.version}": {found.message}; {listing}')
        version = found.version
        name = next(n for n, v in versions.items() if v is version)
    lineage = version.lineage
    service = spec.feature_service or (lineage.feature_service if lineage else "")
    if not service:
        return Resolution(
            None,
            lineage,
            reasons.FEATURE_SERVICE_NOT_FOUND,
            f"spec.featureService is unset and ModelVersion {name} records no feature service in its lineage: "
            "set spec.featureService",
        )
    resolved = ResolvedVersion(name=name, version=version.version, uri=version.uri, feature_service=service)
    message = f'scoring with {name} (version {version.version}; spec.version "{spec.version}") on {service}'
    return Resolution(resolved, lineage, reasons.VERSION_RESOLVED, message)


def resolved_status(
    current: BatchPredictionStatus, name: str, resolution: Resolution, generation: int | None, now: str
) -> BatchPredictionStatus:
    """The status that records the version before the first RayJob is made: every attempt, and a
    resume after a restart, scores with it."""
    assert resolution.version is not None
    conditions = set_condition(
        current.conditions, "VersionResolved", "True", resolution.reason, resolution.message, generation, now
    )
    return current.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conditions,
            "version": resolution.version.version,
            "model_version": resolution.version.name,
            "lineage": resolution.lineage,
            "ray_job": RayJobRef(name=rayjob_name(name, current.attempt)),
            "message": resolution.message,
        }
    )


# What time may fix: a version registered later (a run still training) lets the prediction start.
WAITING_REASONS = (reasons.VERSION_NOT_FOUND, reasons.NO_VERSION_PASSED_GATES)


def unresolved_status(
    current: BatchPredictionStatus, resolution: Resolution, recorded: str | None, generation: int | None, now: str
) -> BatchPredictionStatus:
    """No version to score with, and no RayJob made. A version that does not exist yet (or a
    'latest' with none that passed its gates) waits, Pending, for one to be registered, as a
    ModelDeployment does; anything else (the recorded version deleted, a version without a
    feature service) fails the prediction."""
    if recorded is None and resolution.reason in WAITING_REASONS:
        conditions = set_condition(
            current.conditions, "VersionResolved", "False", resolution.reason, resolution.message, generation, now
        )
        update = {"observed_generation": generation, "conditions": conditions, "message": resolution.message}
        return current.model_copy(update=update)
    return refused_status(current, resolution.message, generation, now, resolution.reason)


def user_error(
    spec: BatchPredictionSpec, status: BatchPredictionStatus, outcome: Outcome, failure: RunFailure | None
) -> UserError | None:
    """The failure the user must fix that ended this attempt, or None (a failure to retry): the
    job's failure.json where it is this attempt's, else its exit code alone."""
    reported = reported_error(failure, status.attempt, outcome.exit_code, BATCH_FAILURE_REASONS)
    if reported is not None or outcome.exit_code is None:
        return reported
    lineage = status.lineage
    service = spec.feature_service or (lineage.feature_service if lineage else "")
    inherited = "" if spec.feature_service else " (spec.featureService is unset: the version's lineage names it)"
    fields = {
        EXIT_DATASET_NOT_FOUND: ("spec.input.uri", spec.input.uri, "does not exist or cannot be read"),
        EXIT_COLUMN_NOT_FOUND: (
            "spec.input.timestampColumn",
            spec.input.timestamp_column,
            f"this column or an entity key of feature service {service} is not a column of the input dataset",
        ),
        EXIT_FEATURE_SERVICE_NOT_FOUND: (
            "spec.featureService",
            service,
            f"the Feast registry has no feature service of that name{inherited}",
        ),
        EXIT_ARTIFACTS_UNWRITABLE: ("spec.output.uri", spec.output.uri, "the job cannot write there"),
        EXIT_CONFIG: (
            "spec.image",
            spec.image or "",
            "the job could not read its configuration: an image older than the operator",
        ),
    }
    return error_for_code(outcome.exit_code, fields, BATCH_FAILURE_REASONS, outcome.message)


def judge_batch(
    name: str,
    spec: BatchPredictionSpec,
    status: BatchPredictionStatus,
    outcome: Outcome,
    failure: RunFailure | None,
    manifest: BatchManifest | None,
    problem: str = "",
    logs: str = "",
) -> Judgement:
    """The decision for an attempt whose RayJob finished: succeed, retry or fail. A manifest of
    another attempt (or prediction, or version) is no proof that this one wrote its rows."""
    if outcome.phase == "Failed":
        return judge_failure(
            user_error(spec, status, outcome, failure), outcome, status.attempt, spec.backoff_limit, logs
        )
    if manifest is None:
        why = f": {problem}" if problem else ""
        return Judgement(
            "fail", reasons.MANIFEST_MISSING, f"the job succeeded but wrote no readable manifest.json{why}"
        )
    theirs = (manifest.batch_prediction, manifest.attempt, manifest.model_version)
    ours = (name, status.attempt, status.model_version)
    if theirs != ours:
        return Judgement(
            "fail",
            reasons.MANIFEST_MISSING,
            f"the job succeeded but {spec.output.uri} holds the {BATCH_MANIFEST_FILE} of another run "
            f"(prediction {theirs[0]}, attempt {theirs[1]}, {theirs[2]}; "
            f"expected {ours[0]}, attempt {ours[1]}, {ours[2]})",
        )
    rate = f" ({throughput(manifest):g} rows/s)" if throughput(manifest) is not None else ""
    return Judgement(
        "succeed",
        reasons.PREDICTIONS_WRITTEN,
        f"wrote {manifest.rows_written} predictions for {manifest.rows_read} rows with {manifest.model_version} "
        f"to {spec.output.uri} in {manifest.seconds:.1f}s{rate}",
    )


def throughput(manifest: BatchManifest) -> float | None:
    """Rows written per second of the whole job (read, join, scoring and write)."""
    if manifest.seconds <= 0:
        return None
    return round(manifest.rows_written / manifest.seconds, 1)


def finished_status(
    name: str,
    spec: BatchPredictionSpec,
    lifted: BatchPredictionStatus,
    outcome: Outcome,
    failure: RunFailure | None,
    manifest: BatchManifest | None,
    problem: str,
    logs: str,
    now: str,
) -> BatchPredictionStatus:
    """The status after the current attempt ended with `outcome` (Succeeded or Failed); a retry
    names the next attempt's RayJob, which the caller creates."""
    judgement = judge_batch(name, spec, lifted, outcome, failure, manifest, problem, logs)
    generation = lifted.observed_generation
    conditions = lifted.conditions
    if judgement.action == "retry":
        for type_ in ("Running", "Complete", "Failed"):  # the attempt failed; the prediction has not
            conditions = set_condition(conditions, type_, "False", judgement.reason, judgement.message, generation, now)
        attempt = lifted.attempt + 1
        return lifted.model_copy(
            update={
                "phase": "Pending",
                "attempt": attempt,
                "ray_job": RayJobRef(name=rayjob_name(name, attempt)),
                "start_time": None,
                "completion_time": None,
                "conditions": conditions,
                "message": judgement.message,
            }
        )
    if judgement.action == "succeed":
        assert manifest is not None
        conditions = set_condition(conditions, "Complete", "True", judgement.reason, judgement.message, generation, now)
        return lifted.model_copy(
            update={
                "phase": "Succeeded",
                "conditions": conditions,
                "message": judgement.message,
                "rows_read": manifest.rows_read,
                "rows_written": manifest.rows_written,
                "output": spec.output.uri,
                "throughput": throughput(manifest),
            }
        )
    conditions = set_condition(conditions, "Complete", "False", judgement.reason, judgement.message, generation, now)
    conditions = set_condition(conditions, "Failed", "True", judgement.reason, judgement.message, generation, now)
    return lifted.model_copy(update={"phase": "Failed", "conditions": conditions, "message": judgement.message})
