"""Specs the schema fuzzer (tests/integration/test_fuzz_specs.py) found the operator choking on:
each one the API server accepted, and the operator then failed on in a loop, never writing a status."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from pydantic import ValidationError

from slipway.api.base import MAX_DURATION_SECONDS, seconds
from slipway.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from slipway.api.modelversion import ModelVersionSpec
from slipway.api.trainingrun import TrainingRunSpec
from slipway.builders.httproute import Routing
from slipway.builders.rayjob import build_rayjob
from slipway.kube.client import apply_body
from slipway.reconcile import reasons
from slipway.reconcile.modeldeployment import Observed, plan_deployment

ROUTING = Routing()
# A \\uD800-\\uDFFF escape: one not itself escaped (a backslash before it an even number of times).
SURROGATE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\ud[89a-f][0-9a-f]{2}")
RUN = {
    "model": "churn",
    "image": "trainer:1",
    "features": {"featureService": "churn_v1", "entities": {"uri": "file:///d/l.parquet"}, "label": "churned"},
    "artifacts": {"uri": "s3://models/churn/"},
}


def test_a_child_with_characters_beyond_the_bmp_is_an_apply_body_yaml_reads() -> None:
    """A hyperparameter with an emoji reached the RayJob as a JSON surrogate pair (\\ud83d\\ude80),
    which the API server's YAML parser refuses (400), so the run's handler failed forever."""
    text = '🚀 \x00\x7f\x85\u2028\ufeff\ud7ff\ue000 "q" \\u0041'
    run = TrainingRunSpec.model_validate(
        {**RUN, "hyperparameters": {"note": text}, "features": {**RUN["features"], "label": "churned 🚀"}}
    )
    rayjob = build_rayjob("run", "ns", run, 0)
    body = apply_body(rayjob)
    decoded = body.decode()
    assert SURROGATE_ESCAPE.search(decoded) is None and "🚀" in decoded  # itself, not a surrogate pair
    assert not any(c in decoded for c in "\x00\x7f\x85\u2028\ufeff")  # YAML must not see these raw
    assert json.loads(body) == rayjob
    assert yaml.safe_load(body) == rayjob


def test_a_run_whose_deadline_the_rayjob_cannot_hold_is_refused() -> None:
    """activeDeadlineSeconds is an int32 in KubeRay's RayJob: 2**31 was accepted by our schema and
    then refused by the RayJob's (422), again and again."""
    TrainingRunSpec.model_validate({**RUN, "activeDeadlineSeconds": 2**31 - 1})
    with pytest.raises(ValidationError):
        TrainingRunSpec.model_validate({**RUN, "activeDeadlineSeconds": 2**31})
    schema = TrainingRunSpec.model_json_schema(by_alias=True)
    assert schema["properties"]["activeDeadlineSeconds"]["maximum"] == 2**31 - 1


@pytest.mark.parametrize("duration", ["9" * 31 + "h", "9999999999999999999999999999999m", "9" * 29 + "ms"])
def test_a_duration_the_schema_allows_never_overflows_a_datetime(duration: str) -> None:
    assert seconds(duration) == MAX_DURATION_SECONDS
    assert datetime.now(UTC) + timedelta(seconds=seconds(duration)) > datetime.now(UTC)
    assert seconds("1m30s") == 90 and seconds("500ms") == 0.5


def test_a_rollout_with_a_huge_progress_deadline_waits_for_its_candidate() -> None:
    """progressDeadline "9999...h" (31 digits, as the schema allows) raised OverflowError in
    every reconcile of the deployment, which never got a status."""
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": "churn",
            "predictor": {"image": "predictor:1"},
            "strategy": {"type": "Direct", "progressDeadline": "9" * 31 + "h"},
            "prometheus": {"url": "http://prometheus:9090"},
            "traffic": "gateway",
        }
    )
    version = ModelVersionSpec.model_validate({"model": "churn", "version": 1, "uri": "s3://m/1/"})
    now = datetime(2026, 11, 22, 10, tzinfo=UTC)
    plan = plan_deployment("md", "ns", spec, ModelDeploymentStatus(), [version], Observed({}, None), 1, now, ROUTING)
    later = plan_deployment(
        "md", "ns", spec, plan.status, [version], Observed({}, None), 1, now + timedelta(days=1), ROUTING
    )
    assert later.status.phase == "Progressing"
    assert later.status.reason == reasons.WAITING_FOR_CANDIDATE


@pytest.mark.parametrize("model", ["churn", "nothing-registered"])
def test_a_pending_deployment_planned_again_from_its_own_status_is_unchanged(model: str) -> None:
    """A deployment with no version to serve wrote its status twice: Progressing said Idle on the
    first reconcile and the resolution's reason on the retry 30 s later."""
    spec = ModelDeploymentSpec.model_validate({"model": model, "predictor": {"image": "predictor:1"}})
    failed = ModelVersionSpec.model_validate(
        {"model": "churn", "version": 1, "uri": "s3://m/1/", "gates": {"passed": False}}
    )
    now = datetime(2026, 11, 22, 10, tzinfo=UTC)
    first = plan_deployment("md", "ns", spec, ModelDeploymentStatus(), [failed], Observed({}, None), 1, now, ROUTING)
    again = plan_deployment(
        "md", "ns", spec, first.status, [failed], Observed({}, None), 1, now + timedelta(seconds=30), ROUTING
    )
    assert first.status.phase == "Pending" and first.retry
    assert again.status == first.status
