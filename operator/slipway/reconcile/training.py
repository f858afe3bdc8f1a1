"""What a finished attempt means: register, retry, or fail, each with its own reason.

The taxonomy: what the user must fix fails the run at once, with a reason of its own and a
message naming the spec field and its value; only what time may fix (a lost worker or node, an
OOM kill, an exception the entrypoint did not foresee) is retried, up to spec.backoffLimit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

from ..api.artifacts import (
    EXIT_ARTIFACTS_UNWRITABLE,
    EXIT_COLUMN_NOT_FOUND,
    EXIT_CONFIG,
    EXIT_DATA_VALIDATION,
    EXIT_DATASET_NOT_FOUND,
    EXIT_FEATURE_SERVICE_NOT_FOUND,
    EXIT_INVALID_HYPERPARAMETER,
    FAILURE_FILE,
    FAILURE_REASONS,
    VALIDATION_FILE,
    Manifest,
    RunFailure,
    ValidationReport,
)
from ..api.trainingrun import TrainingRunSpec
from . import reasons
from .gates import GateVerdict
from .trainingrun import Outcome, one_line

Action = Literal["register", "retry", "fail", "succeed"]  # succeed: a job with nothing to register
DETAIL_LIMIT = 600  # of the pipeline's own words in a message; the rest is ours


class Judgement(NamedTuple):
    action: Action
    reason: str
    message: str


class UserError(NamedTuple):
    reason: str
    field: str
    value: str
    detail: str

    def describe(self) -> str:
        return f'{self.field} "{self.value}": {self.detail}'


def logs_hint(namespace: str, rayjob: str, job_id: str | None) -> str:
    """Where the job's output (and any traceback) is: KubeRay's submitter Job, named after the
    RayJob, keeps it; the Ray job id finds it in the Ray cluster (the dashboard, `ray job logs`)."""
    ray = f" (Ray job {job_id})" if job_id else ""
    return f"kubectl -n {namespace} logs job/{rayjob}{ray}"


def _from_exit_code(run: TrainingRunSpec, code: int, job: str) -> UserError | None:
    """The user error an exit code stands for, told from the spec and the job's message `job`
    (its last log line) alone: the run wrote no readable failure.json (it could not, or the
    operator cannot read the artifact store)."""
    features = run.features
    known: dict[int, tuple[str, str, str]] = {
        EXIT_FEATURE_SERVICE_NOT_FOUND: (
            "spec.features.featureService",
            features.feature_service,
            "the Feast registry has no feature service of that name",
        ),
        EXIT_DATASET_NOT_FOUND: (
            "spec.features.entities.uri",
            features.entities.uri,
            "does not exist or cannot be read",
        ),
        EXIT_COLUMN_NOT_FOUND: (
            "spec.features.label",
            features.label,
            f"this label, spec.features.entities.timestampColumn ({features.entities.timestamp_column}) or an "
            "entity key of the feature service is not a column of the entity dataset",
        ),
        EXIT_INVALID_HYPERPARAMETER: (
            "spec.hyperparameters",
            ", ".join(f"{k}={v}" for k, v in sorted(run.hyperparameters.items())),
            "a value does not parse or is out of range",
        ),
        EXIT_ARTIFACTS_UNWRITABLE: ("spec.artifacts.uri", run.artifacts.uri, "the trainer cannot write there"),
        EXIT_CONFIG: (
            "spec.image",
            run.image or "",
            f"the entrypoint {run.entrypoint} could not read its configuration: an image older than the operator, "
            "or an entrypoint that does not take --hp KEY=VALUE",
        ),
    }
    return error_for_code(code, known, FAILURE_REASONS, job)


def error_for_code(
    code: int, fields: Mapping[int, tuple[str, str, str]], reasons_by_code: Mapping[int, str], job: str
) -> UserError | None:
    """The user error exit code `code` stands for, from `fields` (code -> the spec field, its value
    and what is wrong), or None: a code that is no user error."""
    if code not in fields or code not in reasons_by_code:
        return None
    field, value, detail = fields[code]
    return UserError(reasons_by_code[code], field, value, f"{detail} (no {FAILURE_FILE}; {job})")


def reported_error(
    failure: RunFailure | None, attempt: int, exit_code: int | None, reasons_by_code: Mapping[int, str]
) -> UserError | None:
    """The user error the job's failure.json reports, if it is this attempt's and agrees with the
    exit code (the job also removes one that an earlier run of the same name left, when it starts).
    The reason follows the file's exit code where `reasons_by_code` knows it."""
    if failure is None or failure.attempt != attempt or (exit_code is not None and exit_code != failure.exit_code):
        return None
    reason = reasons_by_code.get(failure.exit_code, failure.reason)
    if reason not in reasons_by_code.values():
        return None
    return UserError(
        reason, one_line(failure.field, 128), one_line(failure.value, 256), one_line(failure.detail, DETAIL_LIMIT)
    )


def _from_validation(run: TrainingRunSpec, report: ValidationReport | None, artifacts: str) -> UserError:
    limits = run.data_validation
    return UserError(
        reasons.DATA_VALIDATION_FAILED,
        "spec.dataValidation",
        f"maxMissingFraction={limits.max_missing_fraction:g}, maxDrift={limits.max_drift:g}",
        f"{(report.reason if report else '') or 'the data failed validation'}; report: {artifacts}{VALIDATION_FILE}",
    )


def user_error(
    run: TrainingRunSpec,
    attempt: int,
    outcome: Outcome,
    failure: RunFailure | None,
    validation: ValidationReport | None,
    artifacts: str,
) -> UserError | None:
    """The failure the user must fix that ended this attempt, or None (a failure to retry).

    The run's failure.json says most, if it is this attempt's and agrees with the exit code (the
    entrypoint also removes one that an earlier run of the same name left, when it starts); else
    the exit code alone says which; a failed validation report counts where no exit code is known
    (a message without Ray's words, an older trainer).
    """
    exit_code = outcome.exit_code
    reported = reported_error(failure, attempt, exit_code, FAILURE_REASONS)
    if reported is not None:
        if reported.reason == reasons.DATA_VALIDATION_FAILED:
            return reported._replace(detail=f"{reported.detail}; report: {artifacts}{VALIDATION_FILE}")
        return reported
    if exit_code == EXIT_DATA_VALIDATION or (exit_code is None and validation is not None and not validation.passed):
        return _from_validation(run, validation, artifacts)
    if exit_code is not None:
        return _from_exit_code(run, exit_code, outcome.message)
    return None


def judge(
    run: TrainingRunSpec,
    attempt: int,
    outcome: Outcome,
    validation: ValidationReport | None,
    manifest: Manifest | None,
    verdict: GateVerdict | None,
    failure: RunFailure | None = None,
    artifacts: str = "",
    logs: str = "",
) -> Judgement:
    """The decision for an attempt whose RayJob finished (outcome Succeeded or Failed).

    Only a failure time may fix is retried: a user error, a missed deadline, a RayJob that
    KubeRay refused or a failed gate would fail the same way again.
    """
    if outcome.phase == "Failed":
        error = user_error(run, attempt, outcome, failure, validation, artifacts)
        return judge_failure(error, outcome, attempt, run.backoff_limit, logs)
    if manifest is None:
        return Judgement("fail", reasons.MANIFEST_MISSING, "the job succeeded but wrote no readable manifest.json")
    if verdict is None or not verdict.passed:
        return Judgement("fail", reasons.GATE_FAILED, verdict.message if verdict else "no evaluation verdict")
    return Judgement("register", reasons.GATES_PASSED, verdict.message)


def judge_failure(error: UserError | None, outcome: Outcome, attempt: int, backoff_limit: int, logs: str) -> Judgement:
    """Fail or retry an attempt that failed (any kind's): a user error `error`, a missed deadline or
    a RayJob KubeRay refused fails at once; anything else is retried up to `backoff_limit`."""
    where = f"; the job's logs: {logs}" if logs else ""
    if error is not None:
        return Judgement("fail", error.reason, f"{error.describe()}; not retried{where}")
    if outcome.reason in (reasons.DEADLINE_EXCEEDED, reasons.RAYJOB_INVALID):
        return Judgement("fail", outcome.reason, outcome.message)
    if attempt < backoff_limit:
        return Judgement(
            "retry",
            reasons.RETRYING,
            f"attempt {attempt} failed ({outcome.message}); retry {attempt + 1} of {backoff_limit}",
        )
    return Judgement(
        "fail",
        reasons.BACKOFF_LIMIT_EXCEEDED,
        f"{attempt + 1} attempts failed; the last: {outcome.message}{where}",
    )
