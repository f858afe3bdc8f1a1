"""End to end in the dev stack: the shadow stage, with real traffic, a real mirror and real analysis.

Real kube-apiserver, operator, model servers behind nginx and Prometheus (no training: the versions
are one small model registered by hand, and a faulty one derived from it by
pipelines.predictor.faults). Version 1 serves; steady traffic comes from the project's load
generator through the gateway. The canary starts with a shadow stage: the candidate gets no user
traffic and a mirror of all of it. The property that matters: a version that fails half its
requests is rolled back during the shadow stage while the users see not one error; a healthy one
passes it on the same analysis and goes on to its steps.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from slipway.devstack.stack import NAMESPACE, DevStack
from slipway.devstack.traffic import LoadGenerator
from tests.e2e.rollouts import (
    GROUP,
    HOST,
    PLAIN_INSTANCES,
    ROLLOUT_TIMEOUT,
    VERSION,
    canary,
    md_status,
    prometheus,
    register,
    until,
)
from tests.support import wait_for, write_model_run

pytestmark = pytest.mark.e2e
SHADOW_CANARY = canary(progress_deadline="180s")
SHADOW_CANARY["canary"]["shadow"] = {"percent": 100, "duration": "6s"}  # type: ignore[index]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("dev"), with_training=False) as running:
        yield running


def model_run(stack: DevStack, number: int) -> Path:
    """The same small model each time (seed 1): a healthy candidate differs in nothing."""
    return write_model_run(stack.artifacts / "runs" / f"churn-{number}", seed=1)


def register_faulty(stack: DevStack, api: client.CustomObjectsApi, number: int, source: Path, *fault: str) -> None:
    out = stack.artifacts / "runs" / f"churn-faulty-{number}"
    subprocess.run(
        [sys.executable, "-m", "pipelines.predictor.faults", "--source", str(source), "--out", str(out), *fault],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    register(api, number, out)


def route(api: client.CustomObjectsApi) -> dict[str, Any]:
    obj: dict[str, Any] = api.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", "churn"
    )
    return obj


def user_weight(api: client.CustomObjectsApi, version: int) -> int:
    refs = route(api)["spec"]["rules"][0]["backendRefs"]
    return sum(int(r["weight"]) for r in refs if r["name"] == f"churn-v{version}-predictor")


def mirrored_to(api: client.CustomObjectsApi) -> list[str]:
    filters = route(api)["spec"]["rules"][0].get("filters") or []
    return [f["requestMirror"]["backendRef"]["name"] for f in filters if f["type"] == "RequestMirror"]


def answered(stack: DevStack, version: int, outcome: str) -> float:
    """Requests version `version`'s own server counted, as Prometheus saw them."""
    query = f'sum(slipway_requests_total{{namespace="{NAMESPACE}",revision="{version}",outcome="{outcome}"}})'
    result = prometheus(stack, query)
    return float(result[0]["value"][1]) if result else 0.0


def server_errors(outcomes: dict[int, int]) -> dict[int, int]:
    return {code: n for code, n in outcomes.items() if code >= 500 or code == 0}


@pytest.fixture(scope="module")
def load(stack: DevStack, api: client.CustomObjectsApi) -> Iterator[LoadGenerator]:
    """Version 1 serving, with steady traffic through the gateway."""
    register(api, 1, model_run(stack, 1))
    deployment = stack.model_deployment(strategy=copy.deepcopy(SHADOW_CANARY), features=False)
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", deployment)
    until(api, "version 1 stable", phase="Stable", stableVersion=1)
    with LoadGenerator(stack.gateway_url, HOST, "churn", PLAIN_INSTANCES, rate=25, max_seconds=900) as generator:
        yield generator


def test_a_version_failing_half_its_requests_is_rolled_back_in_shadow_and_no_user_sees_an_error(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    before = load.snapshot()
    register_faulty(stack, api, 2, model_run(stack, 1), "--error-rate", "0.5")
    seen: dict[str, Any] = {"shadow": False, "mirror": False}

    def rolled_back() -> dict[str, Any] | None:
        status = md_status(api)
        if status.get("candidateVersion") == 2:
            assert status.get("canaryWeight", 0) == 0 and status.get("shadowPercent") is not None, status
            seen["shadow"] = seen["shadow"] or status.get("shadowPercent") == 100
        # Not one user request may be routed to it, at any moment.
        assert user_weight(api, 2) == 0, route(api)
        seen["mirror"] = seen["mirror"] or mirrored_to(api) == ["churn-v2-predictor"]
        return status if status.get("phase") == "Degraded" and status.get("rolledBackVersion") == 2 else None

    status = wait_for(rolled_back, timeout=ROLLOUT_TIMEOUT, interval=0.3, what="version 2 rolled back")
    assert seen == {"shadow": True, "mirror": True}
    assert status["reason"] == "AnalysisFailed" and "shadow: error-rate" in status["message"], status
    assert status["stableVersion"] == 1 and "shadowPercent" not in status
    (entry,) = [h for h in status["history"] if h["version"] == 2]
    assert entry["outcome"] == "RolledBack" and entry["reason"].startswith("AnalysisFailed: shadow: error-rate")
    wait_for(lambda: mirrored_to(api) == [], what="the mirror taken away")
    # It was judged on real, mirrored traffic: its own server counted the copies, and its failures.
    assert answered(stack, 2, "server_error") > 0 and answered(stack, 2, "success") > 0
    after = load.snapshot()
    delta = {code: after[code] - before[code] for code in after}
    assert delta.get(200, 0) > 50, delta
    assert not server_errors(delta), (delta, load.errors)  # users saw only version 1's answers


def test_a_healthy_version_passes_shadow_on_the_same_analysis_then_walks_the_steps(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    before = load.snapshot()
    register(api, 3, model_run(stack, 3))
    until(api, "version 3 rolling out", candidateVersion=3)
    stages: list[tuple[Any, ...]] = []

    def promoted() -> dict[str, Any] | None:
        status = md_status(api)
        assert status.get("phase") not in ("Degraded", "RollingBack", "Failed"), status
        if status.get("candidateVersion") == 3 and status.get("stepStartedAt"):
            stage = ("shadow",) if status.get("shadowPercent") else (status["step"], status["canaryWeight"])
            if not stages or stages[-1] != stage:
                stages.append(stage)
        return status if status.get("stableVersion") == 3 else None

    status = wait_for(promoted, timeout=ROLLOUT_TIMEOUT, interval=0.3, what="version 3 promoted")
    assert stages == [("shadow",), (0, 25), (1, 50)], stages
    assert {r["metric"]: r["verdict"] for r in status["analysis"]} == {
        "error-rate": "Passed",
        "latency-p95": "Passed",
        "prediction-mean-shift": "Passed",
    }
    after = load.snapshot()
    delta = {code: after[code] - before[code] for code in after}
    assert not server_errors(delta), (delta, load.errors)


def test_the_load_saw_no_errors(load: LoadGenerator) -> None:
    outcomes = load.snapshot()
    assert outcomes[200] > 100, outcomes
    assert not server_errors(dict(outcomes)), (outcomes, load.errors)
