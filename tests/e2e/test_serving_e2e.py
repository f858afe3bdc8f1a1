"""End to end in the dev stack: progressive delivery with real traffic and real analysis.

Real kube-apiserver and operator; versions 1 and 2 trained by TrainingRuns (Ray, Feast); faulty
versions derived from version 1's artifact and registered by hand; every InferenceService a KServe
model-server process of our predictor (enriching requests from Feast's online store); the
HTTPRoute's split done by nginx; analysis by a real Prometheus scraping the model servers; and
traffic from the project's load generator for the whole module. The tests run in order: each
version rolls out on top of the previous outcome, as it would in a cluster.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
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
    INTERVAL,
    ROLLOUT_TIMEOUT,
    VERSION,
    canary,
    md_status,
    prometheus,
    register,
    until,
)
from tests.support import wait_for

pytestmark = pytest.mark.e2e
TRAIN_TIMEOUT = 600
CANARY = canary(progress_deadline="120s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("dev")) as running:
        yield running


def model_version(api: client.CustomObjectsApi, number: int) -> dict[str, Any] | None:
    items = api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modelversions")["items"]
    return next((i for i in items if i["spec"]["version"] == number), None)


def train(stack: DevStack, api: client.CustomObjectsApi, name: str, number: int, **spec: Any) -> dict[str, Any]:
    """A TrainingRun for real; returns the ModelVersion it registers."""
    manifest = stack.training_run(name, **spec)
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "trainingruns", manifest)

    def registered() -> dict[str, Any] | None:
        if (problem := stack.dead()) is not None:
            raise AssertionError(problem)
        run = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "trainingruns", name)
        if (run.get("status") or {}).get("phase") == "Failed":
            raise AssertionError(f"{name} failed: {run['status']}")
        return model_version(api, number)

    return wait_for(registered, timeout=TRAIN_TIMEOUT, interval=2, what=f"{name} to register version {number}")


def register_faulty(stack: DevStack, api: client.CustomObjectsApi, number: int, source: str, *fault: str) -> None:
    """A version derived from a trained one by pipelines.predictor.faults, registered by hand."""
    out = stack.artifacts / "runs" / f"churn-faulty-{number}"
    subprocess.run(
        [sys.executable, "-m", "pipelines.predictor.faults", "--source", source, "--out", str(out), *fault],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    register(api, number, out)


def run_dir(mv: dict[str, Any]) -> str:
    return str(mv["spec"]["uri"]).removeprefix("file://")


def weights(api: client.CustomObjectsApi) -> dict[str, int]:
    route = api.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", "churn")
    return {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}


def served(stack: DevStack, version: int) -> float:
    """Requests version `version` has answered, as Prometheus saw them."""
    result = prometheus(stack, f'sum(slipway_requests_total{{namespace="{NAMESPACE}",revision="{version}"}})')
    return float(result[0]["value"][1]) if result else 0.0


def slipway(stack: DevStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(stack.kubeconfig),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    kubectl = str(stack.plane.assets.kubectl)
    return subprocess.run([kubectl, "slipway", "-n", NAMESPACE, *args], env=env, capture_output=True, text=True)


def kubectl(stack: DevStack, *args: str) -> str:
    result = subprocess.run(
        [str(stack.plane.assets.kubectl), f"--kubeconfig={stack.kubeconfig}", "-n", NAMESPACE, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.fixture(scope="module")
def first(stack: DevStack, api: client.CustomObjectsApi) -> dict[str, Any]:
    """Version 1 trained and serving before any traffic starts."""
    v1 = train(stack, api, "churn-1", 1)
    api.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "modeldeployments", stack.model_deployment(strategy=CANARY)
    )
    until(api, "version 1 stable", phase="Stable", stableVersion=1)
    return v1


@pytest.fixture(scope="module")
def load(stack: DevStack, first: dict[str, Any]) -> Iterator[LoadGenerator]:
    instances = [{"customer_id": i} for i in range(1001, 1201)]  # customers in the online store (1001-3000)
    with LoadGenerator(stack.gateway_url, HOST, "churn", instances, rate=25, max_seconds=1800) as generator:
        yield generator


def test_the_first_version_answers_through_the_gateway(stack: DevStack, first: dict[str, Any]) -> None:
    body = json.dumps({"instances": [{"customer_id": 1007}, {"customer_id": 1008}]}).encode()
    request = urllib.request.Request(
        f"{stack.gateway_url}/v1/models/churn:predict", body, {"Host": HOST, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        predictions = json.loads(response.read())["predictions"]
    assert len(predictions) == 2 and all(0.0 <= p <= 1.0 for p in predictions)


def test_a_healthy_version_is_promoted_through_every_step(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    train(stack, api, "churn-2", 2, hyperparameters={"epochs": "6", "batchSize": "256", "learningRate": "0.01"})
    steps_seen: set[tuple[int, int]] = set()

    def promoted() -> dict[str, Any] | None:
        status = md_status(api)
        if status.get("candidateVersion") == 2 and status.get("stepStartedAt"):
            steps_seen.add((status["step"], status["canaryWeight"]))
        assert status.get("phase") not in ("Degraded", "RollingBack", "Failed"), status
        return status if status.get("stableVersion") == 2 else None

    status = wait_for(promoted, timeout=TRAIN_TIMEOUT, interval=0.3, what="version 2 promoted")
    assert steps_seen == {(0, 25), (1, 50)}, steps_seen
    assert {r["metric"]: r["verdict"] for r in status["analysis"]} == {
        "error-rate": "Passed",
        "latency-p95": "Passed",
        "prediction-mean-shift": "Passed",
    }
    assert [h["outcome"] for h in status["history"] if h["version"] == 2] == ["Promoted"]
    assert served(stack, 2) > 0 and load.snapshot()[200] > 0


def test_a_version_that_fails_requests_is_rolled_back(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    register_faulty(stack, api, 3, run_dir(first_version(api)), "--error-rate", "0.4")
    status = until(api, "version 3 rolled back", phase="Degraded", rolledBackVersion=3)
    assert status["reason"] == "AnalysisFailed" and "error-rate" in status["message"], status
    assert status["stableVersion"] == 2
    wait_for(lambda: weights(api).get("churn-v3-predictor") == 0, what="no traffic on version 3")
    row = kubectl(stack, "get", "md", "churn", "--no-headers").split()
    assert "Degraded" in row and "AnalysisFailed" in row, row
    assert "error-rate" in kubectl(stack, "describe", "md", "churn")
    assert served(stack, 3) > 0  # it did get real traffic before it was judged


def test_a_version_whose_predictions_shift_is_rolled_back(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    register_faulty(stack, api, 4, run_dir(first_version(api)), "--shift", "0.4")
    status = until(api, "version 4 rolled back", phase="Degraded", rolledBackVersion=4)
    assert status["reason"] == "AnalysisFailed" and "prediction-mean-shift" in status["message"], status
    assert status["stableVersion"] == 2


def test_prometheus_down_holds_the_rollout_and_never_promotes(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    register_faulty(stack, api, 5, run_dir(second_version(api)), "--shift", "0")
    until(api, "version 5 at step 0", candidateVersion=5, step=0, phase="Progressing")
    wait_for(lambda: md_status(api).get("stepStartedAt"), timeout=ROLLOUT_TIMEOUT, what="version 5 taking traffic")
    stack.prometheus.stop()
    try:
        before = md_status(api).get("analysisInconclusive", 0)
        # Held for at least four intervals: never promoted, never advanced, nothing counted as failure.
        deadline = time.monotonic() + 4 * INTERVAL + 2
        while time.monotonic() < deadline:
            status = md_status(api)
            assert status["stableVersion"] == 2 and status.get("step") == 0, status
            assert status.get("analysisFailures", 0) == 0, status
            time.sleep(0.5)
        status = md_status(api)
        assert status["analysisInconclusive"] >= before + 2, status
        analysis = {c["type"]: c for c in status["conditions"]}["Analysis"]
        assert analysis["status"] == "Unknown", analysis
    finally:
        stack.prometheus.start()
    until(api, "version 5 promoted once Prometheus is back", stableVersion=5, phase="Stable")


def test_a_killed_operator_resumes_the_rollout_at_the_same_step(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    register_faulty(stack, api, 6, run_dir(second_version(api)), "--shift", "0")
    before = until(api, "version 6 at step 1", candidateVersion=6, step=1)
    stack.operator.kill()
    stack.operator.start()
    status = md_status(api)
    assert status["step"] >= 1 and status["rolloutStartedAt"] == before["rolloutStartedAt"]
    status = until(api, "version 6 promoted after the restart", stableVersion=6, phase="Stable")
    assert [h["outcome"] for h in status["history"] if h["version"] == 6] == ["Promoted"]


def test_blue_green_switches_at_once_and_switches_back(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    blue_green = {
        "type": "BlueGreen",
        "blueGreen": {
            "previewWeight": 20,
            "scaleDownDelay": "300s",
            "analysis": copy.deepcopy(CANARY["canary"]["analysis"]),
        },  # type: ignore[index]
    }
    api.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "modeldeployments", "churn", {"spec": {"strategy": blue_green}}
    )
    register_faulty(stack, api, 7, run_dir(second_version(api)), "--shift", "0")
    until(api, "version 7 switched", stableVersion=7, phase="Stable", previousVersion=6)
    wait_for(lambda: weights(api) == {"churn-v6-predictor": 0, "churn-v7-predictor": 100}, what="all on 7")
    assert slipway(stack, "abort", "churn").returncode == 0
    status = until(api, "switched back to 6", stableVersion=6, rolledBackVersion=7, timeout=30)
    assert status["reason"] == "Aborted"
    wait_for(lambda: weights(api) == {"churn-v6-predictor": 100, "churn-v7-predictor": 0}, timeout=10, what="all on 6")
    # Version 6 was warm the whole time: it answers at once, with no errors in between.
    before = served(stack, 6)
    wait_for(lambda: served(stack, 6) > before + 10, timeout=30, what="version 6 serving the traffic again")
    view = slipway(stack, "status", "churn").stdout
    assert "rolled back: version 7" in view, view


def test_the_load_saw_no_errors_from_healthy_versions(load: LoadGenerator) -> None:
    outcomes = load.snapshot()
    assert outcomes[200] > 100, outcomes
    assert outcomes[0] == 0, (outcomes, load.errors)  # the gateway always answered


def first_version(api: client.CustomObjectsApi) -> dict[str, Any]:
    mv = model_version(api, 1)
    assert mv is not None
    return mv


def second_version(api: client.CustomObjectsApi) -> dict[str, Any]:
    mv = model_version(api, 2)
    assert mv is not None
    return mv
