"""The dev stack's KubeRay stand-in: real Ray jobs, RayJob status written as KubeRay writes it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from slipway.devstack.ray_local import LocalRay
from slipway.devstack.rayjobs import Executor
from tests.support import Cluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def executor(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    ray = LocalRay(tmp_path_factory.mktemp("ray") / "ray.log", num_cpus=2)
    ray.start()
    runner = Executor(cluster.custom, ray.address, {"SLIPWAY_TEST": "from-executor"}, headers=ray.headers)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            runner.step()
            time.sleep(0.3)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield runner
    stop.set()
    thread.join(timeout=10)
    ray.stop()


def rayjob(name: str, namespace: str, code: str, deadline: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "entrypoint": f"{sys.executable} -c {code!r}",
        "runtimeEnvYAML": yaml.safe_dump({"env_vars": {"FROM_RUN": "from-run"}}),
        # The smallest cluster the real RayJob CRD accepts (the stand-in runs on the local Ray).
        "rayClusterSpec": {
            "headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head", "image": "ray:test"}]}}}
        },
    }
    if deadline:
        spec["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = cluster.custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", name)
    return obj.get("status") or {}


def finished(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    status = status_of(cluster, namespace, name)
    return status if status.get("jobDeploymentStatus") in ("Complete", "Failed", "ValidationFailed") else None


def test_a_job_runs_with_its_environment_and_succeeds(cluster: Cluster, executor: Executor, namespace: str) -> None:
    both = "os.environ['FROM_RUN'] == 'from-run' and os.environ['SLIPWAY_TEST'] == 'from-executor'"
    code = f"import os, sys; sys.exit(0 if {both} else 1)"
    cluster.custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", rayjob("ok", namespace, code))
    status = wait_for(lambda: finished(cluster, namespace, "ok"), timeout=120, what="the job to finish")
    assert (status["jobStatus"], status["jobDeploymentStatus"]) == ("SUCCEEDED", "Complete")
    assert status["startTime"] and status["endTime"] and status["jobId"].startswith(f"{namespace}-ok-")
    # The Ray job's own times, as KubeRay mirrors them from the dashboard.
    assert status["rayJobInfo"]["startTime"] and status["rayJobInfo"]["endTime"]
    assert status["rayJobInfo"]["startTime"] >= status["startTime"]


def test_a_failing_job_is_failed(cluster: Cluster, executor: Executor, namespace: str) -> None:
    cluster.custom.create_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayjobs", rayjob("bad", namespace, "raise SystemExit(3)")
    )
    status = wait_for(lambda: finished(cluster, namespace, "bad"), timeout=120, what="the job to finish")
    # KubeRay: a failed Ray job fails the RayJob, with the reason AppFailed.
    assert (status["jobStatus"], status["jobDeploymentStatus"], status["reason"]) == ("FAILED", "Failed", "AppFailed")
    assert status["message"]


def test_a_job_past_its_deadline_is_stopped(cluster: Cluster, executor: Executor, namespace: str) -> None:
    job = rayjob("slow", namespace, "import time; time.sleep(120)", deadline=3)
    cluster.custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", job)
    status = wait_for(lambda: finished(cluster, namespace, "slow"), timeout=120, what="the deadline")
    assert (status["jobDeploymentStatus"], status["reason"]) == ("Failed", "DeadlineExceeded")
    assert status.get("jobStatus") != "STOPPED"  # KubeRay leaves jobStatus as it was
    assert "activeDeadlineSeconds" in status["message"]


def test_every_status_write_carries_start_time(cluster: Cluster, executor: Executor, namespace: str) -> None:
    """KubeRay's first write sets startTime (a write without it once made KubeRay panic)."""
    job = rayjob("first", namespace, "import time; time.sleep(2)")
    cluster.custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", job)
    seen: list[dict[str, Any]] = []

    def done() -> bool:
        status = status_of(cluster, namespace, "first")
        if status:
            seen.append(status)
        return finished(cluster, namespace, "first") is not None

    wait_for(done, timeout=120, what="the job to finish")
    assert seen and all(s.get("startTime") for s in seen), seen


def test_a_name_kuberay_refuses_is_validation_failed(cluster: Cluster, executor: Executor, namespace: str) -> None:
    job = rayjob("churn.v2-0", namespace, "pass")
    cluster.custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", job)
    status = wait_for(lambda: finished(cluster, namespace, "churn.v2-0"), timeout=60, what="KubeRay's verdict")
    assert (status["jobDeploymentStatus"], status["reason"]) == ("ValidationFailed", "ValidationFailed")
