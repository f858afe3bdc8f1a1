"""The evaluation gate, the judgement of a finished attempt, and version numbering."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.api.artifacts import Manifest, ValidationReport, run_uri
from slipway.api.modelversion import ModelVersionSpec
from slipway.api.trainingrun import Evaluation, TrainingRunSpec
from slipway.reconcile import reasons
from slipway.reconcile.gates import evaluate_gate
from slipway.reconcile.registry import next_version, serving_metric
from slipway.reconcile.training import judge
from slipway.reconcile.trainingrun import Outcome


@pytest.mark.parametrize(
    ("evaluation", "metrics", "serving", "passed", "words"),
    [
        ({"metric": "auc", "minimum": 0.8}, {"auc": 0.86}, None, True, "passed"),
        ({"metric": "auc", "minimum": 0.8}, {"auc": 0.79}, None, False, "below the minimum 0.8"),
        ({"metric": "auc"}, {"accuracy": 0.9}, None, False, "no auc"),
        ({"metric": "auc", "mustBeatServing": True}, {"auc": 0.86}, 0.85, True, "beating the serving"),
        ({"metric": "auc", "mustBeatServing": True}, {"auc": 0.85}, 0.85, False, "does not beat"),
        ({"metric": "auc", "mustBeatServing": True}, {"auc": 0.5}, None, True, "passed"),  # nothing served yet
        ({"metric": "auc", "mustBeatServing": False}, {"auc": 0.5}, 0.9, True, "passed"),
        ({"metric": "logLoss", "maximum": 0.4}, {"logLoss": 0.45}, None, False, "above the maximum"),
        ({"metric": "logLoss", "mustBeatServing": True}, {"logLoss": 0.30}, 0.35, True, "beating"),
        ({"metric": "logLoss", "mustBeatServing": True}, {"logLoss": 0.40}, 0.35, False, "does not beat"),
    ],
)
def test_gate(
    evaluation: dict[str, Any], metrics: dict[str, float], serving: float | None, passed: bool, words: str
) -> None:
    verdict = evaluate_gate(Evaluation.model_validate(evaluation), metrics, serving)
    assert verdict.passed is passed
    assert words in verdict.message


RUN = TrainingRunSpec.model_validate(
    {
        "model": "churn",
        "image": "t:1",
        "features": {"featureService": "churn_v1", "entities": {"uri": "file:///l.parquet"}, "label": "churned"},
        "artifacts": {"uri": "file:///tmp/a/"},
        "backoffLimit": 2,
    }
)
FAILED = Outcome("Failed", reasons.RAYJOB_FAILED, "exit 1")
SUCCEEDED = Outcome("Succeeded", reasons.RAYJOB_SUCCEEDED, "ok")
MANIFEST = Manifest(metrics={"auc": 0.9}, features=["a"])
PASS = evaluate_gate(RUN.evaluation, {"auc": 0.9}, None)
BAD_DATA = ValidationReport(passed=False, reason="missing fraction above 0.01: sessions_30d (0.20)")


@pytest.mark.parametrize(
    ("attempt", "outcome", "validation", "manifest", "verdict", "action", "reason"),
    [
        (0, FAILED, None, None, None, "retry", reasons.RETRYING),
        (1, FAILED, None, None, None, "retry", reasons.RETRYING),
        (2, FAILED, None, None, None, "fail", reasons.BACKOFF_LIMIT_EXCEEDED),
        (0, FAILED, BAD_DATA, None, None, "fail", reasons.DATA_VALIDATION_FAILED),
        (0, Outcome("Failed", reasons.DEADLINE_EXCEEDED, "late"), None, None, None, "fail", reasons.DEADLINE_EXCEEDED),
        (0, Outcome("Failed", reasons.RAYJOB_INVALID, "bad name"), None, None, None, "fail", reasons.RAYJOB_INVALID),
        (0, SUCCEEDED, None, None, None, "fail", reasons.MANIFEST_MISSING),
        (
            0,
            SUCCEEDED,
            None,
            MANIFEST,
            evaluate_gate(Evaluation(must_beat_serving=True), {"auc": 0.9}, 0.95),
            "fail",
            reasons.GATE_FAILED,
        ),
        (0, SUCCEEDED, None, MANIFEST, PASS, "register", reasons.GATES_PASSED),
    ],
)
def test_judge(
    attempt: int, outcome: Outcome, validation: Any, manifest: Any, verdict: Any, action: str, reason: str
) -> None:
    judgement = judge(RUN, attempt, outcome, validation, manifest, verdict)
    assert (judgement.action, judgement.reason) == (action, reason)
    assert judgement.message


def test_data_validation_failure_names_the_features() -> None:
    assert "sessions_30d" in judge(RUN, 0, FAILED, BAD_DATA, None, None).message


@pytest.mark.parametrize(
    ("existing", "last", "expected"),
    [([], 0, 1), ([1, 2, 3], 0, 4), ([1, 2], 5, 6), ([7], 3, 8)],  # (a deleted 6 is never reused)
)
def test_next_version(existing: list[int], last: int, expected: int) -> None:
    assert next_version(existing, last) == expected


def test_serving_metric_reads_the_stable_versions_record() -> None:
    versions = [
        ModelVersionSpec(model="churn", version=3, uri="s3://m/3/", metrics={"auc": "0.86"}),
        ModelVersionSpec(model="churn", version=4, uri="s3://m/4/", metrics={"auc": "0.9"}),
    ]
    assert serving_metric(3, versions, "auc") == pytest.approx(0.86)
    assert serving_metric(None, versions, "auc") is None
    assert serving_metric(3, versions, "accuracy") is None


def test_run_artifacts_live_under_the_run_name() -> None:
    assert run_uri("s3://models/churn", "r1") == "s3://models/churn/runs/r1/"
    assert run_uri("file:///a/", "r1") == "file:///a/runs/r1/"
