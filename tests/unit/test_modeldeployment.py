"""ModelDeployment -> InferenceService and status, for every situation the Direct path meets."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from slipway.api.modelversion import ModelVersionSpec
from slipway.builders.inferenceservice import build_inferenceservice
from slipway.reconcile import reasons
from slipway.reconcile.conditions import condition
from slipway.reconcile.modeldeployment import plan_deployment

NOW = "2026-11-22T10:00:00Z"


def md(**overrides: Any) -> ModelDeploymentSpec:
    body: dict[str, Any] = {"model": "churn", "predictor": {"image": "predictor:1"}, **overrides}
    return ModelDeploymentSpec.model_validate(body)


def mv(version: int, passed: bool = True) -> ModelVersionSpec:
    return ModelVersionSpec.model_validate(
        {"model": "churn", "version": version, "uri": f"s3://m/{version}/", "gates": {"passed": passed}}
    )


def isvc(version: int, ready: bool, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation, "labels": {"slipway.dev/version": str(version)}},
        "status": {
            "observedGeneration": observed,
            "url": "http://churn.ml",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "Starting"}],
        },
    }


def plan(
    spec: ModelDeploymentSpec,
    versions: list[ModelVersionSpec],
    observed: dict[str, Any] | None,
    current: ModelDeploymentStatus | None = None,
):  # type: ignore[no-untyped-def]
    return plan_deployment("churn", "ml", spec, current or ModelDeploymentStatus(), versions, observed, 1, NOW)


def test_inferenceservice_carries_the_version_predictor_and_features() -> None:
    spec = md(
        predictor={
            "image": "predictor:1",
            "minReplicas": 2,
            "maxReplicas": 5,
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
            "features": {"featureService": "churn_v1", "entityKey": "customer_id"},
        }
    )
    obj = build_inferenceservice("churn", "ml", "churn", spec, mv(3))
    predictor = obj["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 5)
    container = predictor["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STORAGE_URI"] == "s3://m/3/" and env["SLIPWAY_MODEL_VERSION"] == "3"
    assert env["SLIPWAY_FEATURE_SERVICE"] == "churn_v1" and env["SLIPWAY_ENTITY_KEY"] == "customer_id"
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}
    assert obj["metadata"]["labels"]["slipway.dev/version"] == "3"
    assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_kserve_traffic_uses_serverless_mode_and_no_feature_env_without_features() -> None:
    obj = build_inferenceservice("churn", "ml", "churn", md(traffic="kserve"), mv(1))
    assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    names = {e["name"] for e in obj["spec"]["predictor"]["containers"][0]["env"]}
    assert "SLIPWAY_FEATURE_SERVICE" not in names
    assert "resources" not in obj["spec"]["predictor"]["containers"][0]


def test_missing_version_is_a_condition_and_a_retry_not_a_child() -> None:
    result = plan(md(version=5), [mv(1)], None)
    assert result.children == [] and result.retry
    assert result.status.phase == "Pending"
    resolved = condition(result.status.conditions, "VersionResolved")
    assert resolved is not None and resolved.status == "False" and resolved.reason == reasons.VERSION_NOT_FOUND
    assert "5" in resolved.message


@pytest.mark.parametrize(
    ("observed", "phase", "stable", "candidate", "weight"),
    [
        (None, "Progressing", None, 3, 100),
        (isvc(3, ready=False), "Progressing", None, 3, 100),
        (isvc(3, ready=True, generation=2, observed=1), "Progressing", None, 3, 100),  # stale readiness
        (isvc(2, ready=True), "Progressing", None, 3, 100),  # still the old version's readiness
        (isvc(3, ready=True), "Stable", 3, None, 0),
    ],
)
def test_direct_rollout_states(
    observed: dict[str, Any] | None, phase: str, stable: int | None, candidate: int | None, weight: int
) -> None:
    result = plan(md(strategy={"type": "Direct"}), [mv(1), mv(3)], observed)
    assert [c["metadata"]["labels"]["slipway.dev/version"] for c in result.children] == ["3"]
    status = result.status
    assert (status.phase, status.stable_version, status.candidate_version, status.canary_weight) == (
        phase,
        stable,
        candidate,
        weight,
    )
    assert not result.retry
    if phase == "Stable":
        assert status.url == "http://churn.ml"
        assert condition(status.conditions, "Ready").reason == reasons.ENDPOINT_READY  # type: ignore[union-attr]


def test_direct_replaces_a_stable_version_and_keeps_ready_while_rolling() -> None:
    stable = plan(md(), [mv(1)], isvc(1, ready=True)).status
    assert stable.stable_version == 1
    rolling = plan(md(), [mv(1), mv(2)], isvc(1, ready=True), stable)
    assert rolling.status.phase == "Progressing" and rolling.status.candidate_version == 2
    assert rolling.status.stable_version == 1
    assert condition(rolling.status.conditions, "Ready").status == "True"  # type: ignore[union-attr]
    done = plan(md(), [mv(1), mv(2)], isvc(2, ready=True, generation=2, observed=2), rolling.status)
    assert (done.status.phase, done.status.stable_version, done.status.candidate_version) == ("Stable", 2, None)


CANARY = {"type": "Canary", "canary": {"steps": [{"weight": 10}]}}


@pytest.mark.parametrize("strategy", [CANARY, {"type": "BlueGreen"}])
def test_first_version_of_a_progressive_strategy_deploys_directly(strategy: dict[str, Any]) -> None:
    result = plan(md(strategy=strategy), [mv(1)], isvc(1, ready=True))
    assert result.status.phase == "Stable" and result.status.stable_version == 1


@pytest.mark.parametrize("strategy", [CANARY, {"type": "BlueGreen"}])
def test_a_new_version_under_a_progressive_strategy_never_moves_traffic_yet(strategy: dict[str, Any]) -> None:
    stable = plan(md(strategy=strategy), [mv(1)], isvc(1, ready=True)).status
    result = plan(md(strategy=strategy), [mv(1), mv(2)], isvc(1, ready=True), stable)
    assert [c["metadata"]["labels"]["slipway.dev/version"] for c in result.children] == ["1"]
    assert result.status.stable_version == 1 and result.status.candidate_version is None
    progressing = condition(result.status.conditions, "Progressing")
    assert progressing is not None and progressing.reason == reasons.STRATEGY_NOT_IMPLEMENTED


def test_latest_skips_versions_that_failed_their_gates() -> None:
    result = plan(md(), [mv(1), mv(2, passed=False)], None)
    assert result.children[0]["metadata"]["labels"]["slipway.dev/version"] == "1"
