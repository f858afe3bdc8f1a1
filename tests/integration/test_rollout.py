"""Rollouts against the real kube-apiserver: children, weights, status, and `kubectl slipway`.

KServe and the Gateway are played by `Controllers`, which writes their status the way they do
(Ready at the observed generation; Accepted at the route's generation) unless told an
InferenceService is broken. Analysis here points at a Prometheus that is not there (inconclusive);
real measurements are the dev-stack e2e tests' job.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slipway.controlplane.server import free_port
from tests.support import Cluster, Controllers, contract_manifests, wait_for

pytestmark = pytest.mark.integration

_, MV, MD = contract_manifests()
KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")
MDS = ("slipway.dev", "v1alpha1", "modeldeployments")


@pytest.fixture
def world(operator: Cluster, namespace: str) -> Iterator[Controllers]:
    controllers = Controllers(operator, namespace)
    controllers.thread.start()
    yield controllers
    controllers.stop.set()
    controllers.thread.join(timeout=5)


def version(number: int) -> dict[str, Any]:
    mv = copy.deepcopy(MV)
    mv["metadata"]["name"] = f"churn-v{number}"
    mv["spec"].update(version=number, uri=f"s3://models/churn/{number}/")
    return mv


def deployment(strategy: dict[str, Any], traffic: str = "gateway", prometheus: str = "") -> dict[str, Any]:
    md = copy.deepcopy(MD)
    md["spec"]["strategy"] = strategy
    md["spec"]["traffic"] = traffic
    md["spec"]["prometheus"] = {"url": prometheus or f"http://127.0.0.1:{free_port()}"}  # nobody listens
    return md


def canary(*steps: tuple[int, str], metrics: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    analysis = {"interval": "1s", "failureLimit": 0, "metrics": metrics or []}
    return {
        "type": "Canary",
        "canary": {"steps": [{"weight": w, "pause": p} for w, p in steps], "analysis": analysis},
        **extra,
    }


def status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    md = cluster.custom.get_namespaced_custom_object(*MDS[:2], namespace, MDS[2], "churn")
    return md.get("status") or {}


def weights(cluster: Cluster, namespace: str) -> dict[str, int]:
    route = cluster.custom.get_namespaced_custom_object(*ROUTES[:2], namespace, ROUTES[2], "churn")
    return {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}


def isvc_names(cluster: Cluster, namespace: str) -> list[str]:
    items = cluster.custom.list_namespaced_custom_object(*KSERVE[:2], namespace, KSERVE[2])["items"]
    return sorted(i["metadata"]["name"] for i in items)


def until(cluster: Cluster, namespace: str, what: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
    """Polls the deployment's status until every field has the given value."""
    seen: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        current = status(cluster, namespace)
        seen.clear()
        seen.update(current)
        return current if all(current.get(k) == v for k, v in fields.items()) else None

    try:
        return wait_for(probe, timeout=timeout, what=what)
    except AssertionError as error:  # say where it stopped, and what the operator last said
        tail = "\n".join(cluster.operator_log().splitlines()[-60:])
        raise AssertionError(f"{error}; status: {seen}\noperator log (last 60 lines):\n{tail}") from None


def slipway(cluster: Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl slipway ...`, found by kubectl on PATH as users find it."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(cluster.plane.assets.kubectl), "slipway", "-n", namespace, *args],
        env={**env, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def stable_on(cluster: Cluster, namespace: str, md: dict[str, Any], number: int = 1) -> None:
    cluster.apply(namespace, version(number), md)
    until(cluster, namespace, f"version {number} stable", phase="Stable", stableVersion=number)


def test_canary_walks_every_step_and_promotes(operator: Cluster, namespace: str, world: Controllers) -> None:
    stable_on(operator, namespace, deployment(canary((20, "1s"), (60, "1s"))))
    assert weights(operator, namespace) == {"churn-v1-predictor": 100}
    operator.apply(namespace, version(2))
    until(operator, namespace, "step 0 at 20%", phase="Progressing", candidateVersion=2, step=0, canaryWeight=20)
    wait_for(lambda: weights(operator, namespace) == {"churn-v1-predictor": 80, "churn-v2-predictor": 20}, what="80/20")
    until(operator, namespace, "step 1 at 60%", step=1, canaryWeight=60)
    wait_for(lambda: weights(operator, namespace) == {"churn-v1-predictor": 40, "churn-v2-predictor": 60}, what="40/60")
    done = until(operator, namespace, "promoted", phase="Stable", stableVersion=2)
    assert done.get("candidateVersion") is None and done["previousVersion"] == 1  # kept while requests drain
    assert [(h["version"], h["outcome"]) for h in done["history"]] == [(1, "Promoted"), (2, "Promoted")]
    wait_for(lambda: weights(operator, namespace)["churn-v2-predictor"] == 100, what="all traffic on version 2")
    out = operator.kubectl("get", "md", "churn", "-n", namespace, "--no-headers").stdout.split()
    assert out[1:6] == ["churn", "Canary", "2", "<none>", "0"] or out[1:5] == ["churn", "Canary", "2", "0"], out
    assert "Stable" in out and "Promoted" in out


def test_plugin_pauses_resumes_aborts_retries_and_promotes(
    operator: Cluster, namespace: str, world: Controllers
) -> None:
    # Step 0's pause outlasts a `kubectl slipway pause` on a loaded machine, so the pause lands in step 0;
    # step 1's outlasts the `abort` (on a loaded CI machine a 2 s pause ended in a promotion first).
    stable_on(operator, namespace, deployment(canary((10, "8s"), (50, "120s"))))
    operator.apply(namespace, version(2))
    until(operator, namespace, "step 0", candidateVersion=2, step=0, canaryWeight=10)

    assert slipway(operator, namespace, "pause", "churn").returncode == 0
    paused = until(operator, namespace, "paused", phase="Paused")
    assert paused["reason"] == "Paused" and paused["step"] == 0
    view = slipway(operator, namespace, "status", "churn", "-n", namespace)  # -n after the command too
    assert view.returncode == 0 and "phase:     Paused" in view.stdout and "> 0: weight 10%" in view.stdout, view.stdout
    assert slipway(operator, namespace, "resume", "churn").returncode == 0
    until(operator, namespace, "resumed to step 1", phase="Progressing", step=1)

    assert slipway(operator, namespace, "abort", "churn").returncode == 0
    degraded = until(operator, namespace, "rolled back", phase="Degraded")
    assert degraded["reason"] == "Aborted" and degraded["rolledBackVersion"] == 2 and degraded["stableVersion"] == 1
    assert weights(operator, namespace) == {"churn-v1-predictor": 100, "churn-v2-predictor": 0}  # kept to inspect
    describe = operator.kubectl("describe", "md", "churn", "-n", namespace).stdout
    assert "Aborted" in describe, describe

    assert slipway(operator, namespace, "retry", "churn").returncode == 0
    until(operator, namespace, "retried", phase="Progressing", candidateVersion=2, step=0)
    assert slipway(operator, namespace, "promote", "churn").returncode == 0
    promoted = until(operator, namespace, "promoted by hand", phase="Stable", stableVersion=2)
    assert promoted["history"][-1]["reason"] == "promoted by a user"
    missing = slipway(operator, namespace, "promote", "nope")
    assert missing.returncode == 1 and "nope" in missing.stdout


def test_unreachable_prometheus_holds_the_rollout(operator: Cluster, namespace: str, world: Controllers) -> None:
    md = deployment(canary((50, "0s"), metrics=[{"name": "error-rate", "max": 0.01}]))
    stable_on(operator, namespace, md)
    operator.apply(namespace, version(2))

    def held() -> dict[str, Any] | None:
        current = status(operator, namespace)
        return current if current.get("analysisInconclusive", 0) >= 3 else None

    current = wait_for(held, timeout=30, what="three inconclusive measurements")
    assert (current["phase"], current["step"], current["stableVersion"], current["analysisFailures"]) == (
        "Progressing",
        0,
        1,
        0,
    )
    analysis = {c["type"]: c for c in current["conditions"]}["Analysis"]
    assert analysis["status"] == "Unknown" and "query failed" in analysis["message"]
    assert current["analysis"][0]["verdict"] == "Inconclusive"
    assert weights(operator, namespace) == {"churn-v1-predictor": 50, "churn-v2-predictor": 50}


def test_progress_deadline_rolls_back_a_candidate_that_never_gets_ready(
    operator: Cluster, namespace: str, world: Controllers
) -> None:
    stable_on(operator, namespace, deployment(canary((50, "0s"), progressDeadline="3s")))
    world.broken.add("churn-v2")
    operator.apply(namespace, version(2))
    degraded = until(operator, namespace, "deadline", phase="Degraded")
    assert degraded["reason"] == "ProgressDeadlineExceeded" and degraded["stableVersion"] == 1
    assert "did not become ready within 3s" in degraded["message"]
    assert weights(operator, namespace)["churn-v2-predictor"] == 0


def test_blue_green_switches_keeps_the_old_warm_and_switches_back(
    operator: Cluster, namespace: str, world: Controllers
) -> None:
    strategy = {"type": "BlueGreen", "blueGreen": {"previewWeight": 0, "scaleDownDelay": "120s"}}
    stable_on(operator, namespace, deployment(strategy))
    operator.apply(namespace, version(2))
    switched = until(operator, namespace, "switched", phase="Stable", stableVersion=2)
    assert switched["previousVersion"] == 1
    wait_for(
        lambda: weights(operator, namespace) == {"churn-v1-predictor": 0, "churn-v2-predictor": 100}, what="switch"
    )
    assert slipway(operator, namespace, "abort", "churn").returncode == 0
    back = until(operator, namespace, "switched back", timeout=90, phase="Degraded", stableVersion=1)
    assert back["rolledBackVersion"] == 2 and back["reason"] == "Aborted"
    assert weights(operator, namespace) == {"churn-v1-predictor": 100, "churn-v2-predictor": 0}


def test_blue_green_scales_the_old_version_down_after_the_delay(
    operator: Cluster, namespace: str, world: Controllers
) -> None:
    strategy = {"type": "BlueGreen", "blueGreen": {"scaleDownDelay": "2s"}}
    stable_on(operator, namespace, deployment(strategy))
    operator.apply(namespace, version(2))
    until(operator, namespace, "switched", phase="Stable", stableVersion=2)
    # The operator deletes version 1 in the reconcile that clears previousVersion; the status patch
    # lands just after the delete, so wait for both.
    wait_for(
        lambda: (
            isvc_names(operator, namespace) == ["churn-v2"] and "previousVersion" not in status(operator, namespace)
        ),
        timeout=30,
        what="version 1 removed and forgotten",
    )
    assert weights(operator, namespace) == {"churn-v2-predictor": 100}


def test_kserve_traffic_uses_canary_traffic_percent(operator: Cluster, namespace: str, world: Controllers) -> None:
    stable_on(operator, namespace, deployment(canary((30, "1s")), traffic="kserve"))
    assert isvc_names(operator, namespace) == ["churn"]
    operator.apply(namespace, version(2))

    def percent() -> int | None:
        isvc = operator.custom.get_namespaced_custom_object(*KSERVE[:2], namespace, KSERVE[2], "churn")
        return isvc["spec"]["predictor"].get("canaryTrafficPercent")

    wait_for(lambda: percent() == 30, what="canaryTrafficPercent 30")
    until(operator, namespace, "promoted", phase="Stable", stableVersion=2)
    wait_for(lambda: percent() is None, what="canaryTrafficPercent removed after promotion")
    assert isvc_names(operator, namespace) == ["churn"]


def test_a_replica_change_mid_rollout_does_not_hold_the_candidate(
    operator: Cluster, namespace: str, world: Controllers
) -> None:
    """KServe (Standard) sends a new replica range to the HPA only: the Deployment's generation,
    which KServe copies into status.observedGeneration, does not move while the InferenceService's
    does. Judged by generations, the candidate never became ready and was rolled back."""
    md = deployment(canary((20, "3s")), prometheus="")
    md["spec"]["strategy"]["progressDeadline"] = "20s"
    stable_on(operator, namespace, md)
    operator.apply(namespace, version(2))
    until(operator, namespace, "step 0", candidateVersion=2, step=0, canaryWeight=20)
    scaled = copy.deepcopy(md)
    scaled["spec"]["predictor"]["maxReplicas"] = 8
    operator.apply(namespace, scaled)

    def rescaled() -> bool:
        isvc = operator.custom.get_namespaced_custom_object(*KSERVE[:2], namespace, KSERVE[2], "churn-v2")
        behind = isvc["status"].get("observedGeneration", 0) < isvc["metadata"]["generation"]
        return isvc["spec"]["predictor"]["maxReplicas"] == 8 and behind

    wait_for(rescaled, what="version 2's InferenceService rescaled, its Deployment untouched")
    done = until(operator, namespace, "promoted", timeout=60, phase="Stable", stableVersion=2)
    assert [(h["version"], h["outcome"]) for h in done["history"]][-1] == (2, "Promoted")


def test_shadow_mirrors_without_user_traffic_resumes_after_a_restart_then_walks_the_steps(
    operator: Cluster, namespace: str, world: Controllers
) -> None:
    strategy = canary((50, "1s"))
    strategy["canary"]["shadow"] = {"percent": 100, "duration": "20s"}
    stable_on(operator, namespace, deployment(strategy))
    operator.apply(namespace, version(2))
    shadow = until(operator, namespace, "the shadow stage", candidateVersion=2, shadowPercent=100, canaryWeight=0)

    def mirrored() -> dict[str, Any] | None:
        route = operator.custom.get_namespaced_custom_object(*ROUTES[:2], namespace, ROUTES[2], "churn")
        return route if route["spec"]["rules"][0].get("filters") else None

    (rule,) = wait_for(mirrored, what="the route's mirror")["spec"]["rules"]
    assert rule["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"group": "", "kind": "Service", "name": "churn-v2-predictor", "port": 80},
                "percent": 100,
            },
        }
    ]
    assert weights(operator, namespace) == {"churn-v1-predictor": 100, "churn-v2-predictor": 0}
    started = wait_for(lambda: status(operator, namespace).get("stepStartedAt"), what="the mirror in effect")
    out = operator.kubectl("get", "md", "churn", "-n", namespace, "--no-headers").stdout.split()
    assert out[4:7] == ["2", "0", "100"], out  # Candidate, Weight, Shadow
    view = slipway(operator, namespace, "status", "churn")
    assert "shadow:    100% mirrored to version 2" in view.stdout, view.stdout

    assert operator.operator is not None
    operator.operator.kill()  # mid-stage: the stage lives in the status alone
    operator.start_operator()
    resumed = until(operator, namespace, "still in shadow", shadowPercent=100, candidateVersion=2)
    assert resumed["stepStartedAt"] == started and resumed["rolloutStartedAt"] == shadow["rolloutStartedAt"]
    until(operator, namespace, "step 0 at 50%", timeout=60, step=0, canaryWeight=50)
    assert "shadowPercent" not in status(operator, namespace)
    wait_for(lambda: mirrored() is None, what="the mirror gone")
    until(operator, namespace, "promoted", phase="Stable", stableVersion=2)
