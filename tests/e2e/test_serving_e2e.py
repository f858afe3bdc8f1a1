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
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from slipway.devstack.modelserver import alive, starttime
from slipway.devstack.stack import NAMESPACE, DevStack
from slipway.devstack.traffic import LoadGenerator
from slipway.reconcile.rollout import parse_time
from tests.e2e.rollouts import (
    GROUP,
    HOST,
    INTERVAL,
    ROLLOUT_TIMEOUT,
    VERSION,
    canary,
    md_status,
    model_server_pid,
    predictor_pod,
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


def route_in_effect(api: client.CustomObjectsApi) -> dict[str, int] | None:
    """The route's weights once the gateway has accepted them (its status is written only when
    nginx serves them), else None."""
    route = api.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", "churn")
    parents = (route.get("status") or {}).get("parents") or [{}]
    accepted = {c["type"]: c for c in parents[0].get("conditions", [])}.get("Accepted") or {}
    if accepted.get("status") != "True" or accepted.get("observedGeneration") != route["metadata"]["generation"]:
        return None
    return {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}


def weights(api: client.CustomObjectsApi) -> dict[str, int]:
    route = api.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", "churn")
    return {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}


def served(stack: DevStack, version: int) -> float:
    """Requests version `version` has answered, as Prometheus saw them."""
    result = prometheus(stack, f'sum(slipway_requests_total{{namespace="{NAMESPACE}",revision="{version}"}})')
    return float(result[0]["value"][1]) if result else 0.0


def errors_served(stack: DevStack, version: int) -> float:
    """Requests version `version` failed (5xx), as Prometheus saw them."""
    query = f'sum(slipway_requests_total{{namespace="{NAMESPACE}",revision="{version}",outcome="server_error"}})'
    result = prometheus(stack, query)
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


def test_a_candidate_whose_model_server_is_killed_mid_step_is_restarted_and_judged_afresh(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    """SIGKILL to the candidate's one model server once a canary step is in effect, under load.

    The kubelet restarts it after its back-off (5 s) and a fresh start; meanwhile its pod is not
    ready, so its InferenceService is not either: the operator holds the step (WaitingForCandidate:
    the same step, whose pause and analysis start over) and sends the candidate's share back to the
    stable version, so the gateway's 502/503 for it (no ready endpoint) last only until the new
    weights are in effect. Once ready again the candidate gets its share back, is judged on fresh
    measurements only, and is promoted. Whether it
    is back in time is the progress deadline's call, counted from the rollout's start: this test
    gives the rollout room for a slow restart on a loaded machine (a candidate not ready again by
    then is rolled back, ProgressDeadlineExceeded).
    """
    stable = md_status(api)["stableVersion"]
    deadline = {"spec": {"strategy": {"progressDeadline": "600s"}}}
    api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", "churn", deadline)
    register_faulty(stack, api, 7, run_dir(second_version(api)), "--shift", "0")
    until(api, "version 7 at step 0", candidateVersion=7, step=0, phase="Progressing")

    def ready_pod() -> client.V1Pod | None:
        found = predictor_pod(api, 7)
        return found if found and any(c.ready for c in found.status.container_statuses or []) else None

    pod = wait_for(ready_pod, timeout=ROLLOUT_TIMEOUT, what="version 7's pod ready")
    assert pod.status.container_statuses[0].restart_count == 0, pod
    pid = model_server_pid(stack, pod)
    started = starttime(pid)
    stable_errors, stable_served = errors_served(stack, stable), served(stack, stable)

    def taking_traffic() -> dict[str, Any] | None:
        status = md_status(api)
        return status if status.get("stepStartedAt") else None

    # Killed as soon as the step's weight is in effect: well before its first measurement is due.
    at_step = wait_for(taking_traffic, timeout=ROLLOUT_TIMEOUT, what="version 7 taking traffic")
    at_kill = load.snapshot()
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    timeline: dict[str, float] = {}
    # What the operator must hold while it waits: the step it was in, with its share on stable.
    held = {"step": at_step["step"], "canaryWeight": at_step["canaryWeight"]}
    at_ready: tuple[float, Counter[int]] | None = None
    at_drained: Counter[int] | None = None  # the load once stable has all the traffic again

    def ended() -> dict[str, Any] | None:
        nonlocal at_ready, at_drained
        status = md_status(api)  # read before the pod: never newer than what it says
        now = predictor_pod(api, 7)
        assert now is not None and now.metadata.uid == pod.metadata.uid, now  # the same pod, restarted
        container = (now.status.container_statuses or [None])[0]
        ready = bool(container and container.ready)
        if not ready:
            timeline.setdefault("pod not ready", time.monotonic() - killed)
            assert status.get("stableVersion") == stable, status  # never promoted while down
        if status.get("reason") == "WaitingForCandidate":
            timeline.setdefault("operator waiting", time.monotonic() - killed)
            assert status.get("stepStartedAt") is None, status  # the step starts over once ready
            assert status.get("step") == held["step"] and status.get("canaryWeight") == 0, (held, status)
            in_effect = route_in_effect(api) or {}
            if at_drained is None and in_effect.get(f"churn-v{stable}-predictor") == 100:
                timeline["all traffic on stable"] = time.monotonic() - killed
                at_drained = load.snapshot()
        if ready and "pod not ready" in timeline and at_ready is None:
            timeline["pod ready again"] = time.monotonic() - killed
            at_ready = (served(stack, stable), load.snapshot())
        if status.get("stableVersion") == 7 or status.get("rolledBackVersion") == 7:
            timeline["rollout ended"] = time.monotonic() - killed
            return status
        return None

    status = wait_for(ended, timeout=ROLLOUT_TIMEOUT, interval=0.2, what="the rollout of version 7 to end")
    print(f"\nkilled version 7's model server at {held}: { {k: round(v, 1) for k, v in timeline.items()} }")
    assert "operator waiting" in timeline and held["canaryWeight"] > 0, (timeline, held)
    assert at_ready is not None, timeline

    # The kubelet restarted the process: same pod, a new process, restartCount 1.
    restarted = predictor_pod(api, 7)
    assert restarted is not None and restarted.metadata.uid == pod.metadata.uid
    container = restarted.status.container_statuses[0]
    assert container.ready and container.restart_count == 1, container
    assert model_server_pid(stack, restarted) != pid and started and not alive(pid, started)

    # Meanwhile the stable version answered, without errors. The candidate's share got a gateway's
    # 502 (in flight to the killed process) or 503 (no ready endpoint), never no answer, and only
    # until its share was back on stable: from then on every request was answered by stable.
    assert at_drained is not None, timeline
    outage, drained = at_ready[1] - at_kill, at_ready[1] - at_drained
    print(f"load from the kill until it was ready again: {dict(outage)}; once all on stable: {dict(drained)}")
    assert at_ready[0] > stable_served + 10, (stable_served, at_ready)
    assert errors_served(stack, stable) == stable_errors
    assert set(outage) <= {200, 502, 503} and outage[200] > 0, outage
    assert drained[502] + drained[503] <= 3 and drained[200] > 0, drained  # at most those in flight at the switch

    # Judged on measurements taken after it was back, it passed every step.
    assert status["stableVersion"] == 7 and status["phase"] == "Stable", status
    assert [h["outcome"] for h in status["history"] if h["version"] == 7] == ["Promoted"], status["history"]
    assert {r["verdict"] for r in status["analysis"]} == {"Passed"}, status["analysis"]
    back = next(c.last_transition_time for c in restarted.status.conditions if c.type == "Ready")
    assert parse_time(status["lastAnalysisAt"]) >= back, (status["lastAnalysisAt"], back)
    wait_for(lambda: weights(api) == {f"churn-v{stable}-predictor": 0, "churn-v7-predictor": 100}, what="all on 7")
    deadline["spec"]["strategy"]["progressDeadline"] = CANARY["progressDeadline"]
    api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", "churn", deadline)


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
    old = md_status(api)["stableVersion"]  # 7, or 6 had the killed candidate been rolled back
    register_faulty(stack, api, 8, run_dir(second_version(api)), "--shift", "0")
    until(api, "version 8 switched", stableVersion=8, phase="Stable", previousVersion=old)
    wait_for(lambda: weights(api) == {f"churn-v{old}-predictor": 0, "churn-v8-predictor": 100}, what="all on 8")
    assert slipway(stack, "abort", "churn").returncode == 0
    status = until(api, f"switched back to {old}", stableVersion=old, rolledBackVersion=8, timeout=30)
    assert status["reason"] == "Aborted"
    wait_for(
        lambda: weights(api) == {f"churn-v{old}-predictor": 100, "churn-v8-predictor": 0},
        timeout=10,
        what=f"all on {old}",
    )
    # Version `old` was warm the whole time: it answers at once, with no errors in between.
    before = served(stack, old)
    wait_for(lambda: served(stack, old) > before + 10, timeout=30, what=f"version {old} serving the traffic again")
    view = slipway(stack, "status", "churn").stdout
    assert "rolled back: version 8" in view, view


def test_the_load_saw_no_errors_from_healthy_versions(load: LoadGenerator) -> None:
    """Every request got an answer; the only errors came from versions that were not healthy: 500
    from version 3 (it fails 40% of its requests), 502 and 503 from the gateway for version 7's
    share between its model server's kill and its share's return to the stable version."""
    outcomes = load.snapshot()
    assert outcomes[200] > 100, outcomes
    assert outcomes[0] == 0, (outcomes, load.errors)  # the gateway always answered
    assert set(outcomes) <= {200, 500, 502, 503}, outcomes


def first_version(api: client.CustomObjectsApi) -> dict[str, Any]:
    mv = model_version(api, 1)
    assert mv is not None
    return mv


def second_version(api: client.CustomObjectsApi) -> dict[str, Any]:
    mv = model_version(api, 2)
    assert mv is not None
    return mv
