"""What the dev-stack e2e modules share: the churn ModelDeployment's status, a canary with
analysis, ModelVersions registered by hand, Prometheus queries, plain feature rows for load,
waiting for TrainingRuns to finish, and a version's model-server process."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client

from slipway.devstack.serving import ISVC_LABEL, MARKER_ENV
from slipway.devstack.stack import NAMESPACE, DevStack
from tests.support import wait_for

GROUP, VERSION = "slipway.dev", "v1alpha1"
ROLLOUT_TIMEOUT = 180
HOST = f"churn.{NAMESPACE}.example.com"
INTERVAL = 3  # seconds between measurements
# Requests that carry their features (no Feast lookup), for a steady load.
PLAIN_INSTANCES = [{"sessions_30d": float(i % 17), "monthly_charges": 20.0 + i % 90} for i in range(200)]


def finished_runs(stack: DevStack, api: client.CustomObjectsApi, count: int, timeout: float) -> dict[str, Any]:
    """Name -> status of the namespace's TrainingRuns, once `count` of them have finished; fails at
    once if a dev-stack component died."""

    def finished() -> dict[str, dict[str, Any]] | None:
        items = api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "trainingruns")["items"]
        done = {
            i["metadata"]["name"]: i["status"]
            for i in items
            if (i.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        }
        if (problem := stack.dead()) is not None:
            raise AssertionError(problem)
        return done if len(done) == count else None

    return wait_for(finished, timeout=timeout, interval=1, what=f"{count} runs to finish")


def canary(progress_deadline: str) -> dict[str, Any]:
    """Two short steps, each passing only on a measurement of error rate, latency and drift."""
    return {
        "type": "Canary",
        "progressDeadline": progress_deadline,
        "canary": {
            "steps": [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "2s"}],
            "analysis": {
                "interval": f"{INTERVAL}s",
                "failureLimit": 1,
                "metrics": [
                    {"name": "error-rate", "max": 0.05},
                    {"name": "latency-p95", "max": 1.0},
                    {"name": "prediction-mean-shift", "max": 0.15},
                ],
            },
        },
    }


def md_status(api: client.CustomObjectsApi) -> dict[str, Any]:
    md = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", "churn")
    return md.get("status") or {}


def until(api: client.CustomObjectsApi, what: str, timeout: float = ROLLOUT_TIMEOUT, **fields: Any) -> dict[str, Any]:
    """Polls the churn ModelDeployment's status until every field has the given value."""

    seen: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        seen["status"] = status = md_status(api)
        return status if all(status.get(k) == v for k, v in fields.items()) else None

    try:
        return wait_for(probe, timeout=timeout, interval=0.5, what=what)
    except AssertionError as error:  # say where it stopped, not only that it did
        status = {k: v for k, v in seen.get("status", {}).items() if k not in ("conditions", "stablePredictor")}
        raise AssertionError(f"{error}; the deployment's status: {status}") from None


def register(api: client.CustomObjectsApi, number: int, run: Path) -> None:
    """ModelVersion `number` of churn, served from the model run in `run`, registered by hand."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelVersion",
        "metadata": {"name": f"churn-v{number}", "namespace": NAMESPACE},
        "spec": {"model": "churn", "version": number, "uri": f"file://{run}/", "format": "torchscript"},
    }
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modelversions", body)


def prometheus(stack: DevStack, query: str) -> list[dict[str, Any]]:
    url = f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as response:
        result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
    return result


def predictor_pod(api: client.CustomObjectsApi, number: int) -> client.V1Pod | None:
    """Version `number`'s one predictor pod (KServe's Deployment makes it), if it exists yet."""
    core = client.CoreV1Api(api.api_client)
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"{ISVC_LABEL}=churn-v{number}").items
    live = [p for p in pods if p.metadata.deletion_timestamp is None]
    assert len(live) <= 1, [p.metadata.name for p in live]
    return live[0] if live else None


def model_server_pid(stack: DevStack, pod: client.V1Pod) -> int:
    """The pid of the pod's model-server process, as its status names it (the dev stack's kubelet
    writes `devstack://<pid>` as the containerID), checked to be this stack's predictor process."""
    (container,) = pod.status.container_statuses
    pid = int(container.container_id.removeprefix("devstack://"))
    process = psutil.Process(pid)
    assert process.environ().get(MARKER_ENV) == str(stack.workdir), process
    assert "pipelines.predictor" in process.cmdline(), process.cmdline()
    return pid
