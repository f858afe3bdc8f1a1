"""What a finished attempt means: register, retry, or fail, each with its own reason."""

from __future__ import annotations

from typing import Literal, NamedTuple

from ..api.artifacts import Manifest, ValidationReport
from ..api.trainingrun import TrainingRunSpec
from . import reasons
from .gates import GateVerdict
from .trainingrun import Outcome

Action = Literal["register", "retry", "fail"]


class Judgement(NamedTuple):
    action: Action
    reason: str
    message: str


def judge(
    run: TrainingRunSpec,
    attempt: int,
    outcome: Outcome,
    validation: ValidationReport | None,
    manifest: Manifest | None,
    verdict: GateVerdict | None,
) -> Judgement:
    """The decision for an attempt whose RayJob finished (outcome Succeeded or Failed).

    Only a plain job failure is retried: bad data, a missed deadline, a RayJob that KubeRay refused
    or a failed gate would fail the same way again.
    """
    if outcome.phase == "Failed":
        if validation is not None and not validation.passed:
            return Judgement("fail", reasons.DATA_VALIDATION_FAILED, validation.reason or "the data failed validation")
        if outcome.reason in (reasons.DEADLINE_EXCEEDED, reasons.RAYJOB_INVALID):
            return Judgement("fail", outcome.reason, outcome.message)
        if attempt < run.backoff_limit:
            return Judgement(
                "retry",
                reasons.RETRYING,
                f"attempt {attempt} failed ({outcome.message}); retry {attempt + 1} of {run.backoff_limit}",
            )
        return Judgement(
            "fail", reasons.BACKOFF_LIMIT_EXCEEDED, f"{attempt + 1} attempts failed; the last: {outcome.message}"
        )
    if manifest is None:
        return Judgement("fail", reasons.MANIFEST_MISSING, "the job succeeded but wrote no readable manifest.json")
    if verdict is None or not verdict.passed:
        return Judgement("fail", reasons.GATE_FAILED, verdict.message if verdict else "no evaluation verdict")
    return Judgement("register", reasons.GATES_PASSED, verdict.message)
