"""TrainingRuns reconciled by the real KubeRay operator: what it builds from our RayJobs, and the
run's phase following the status KubeRay itself writes (never a status written by a test)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.conformance.conftest import NAMESPACE
from tests.support import Cluster, contract_manifests, wait_for

pytestmark = pytest.mark.integration

TR, _, _ = contract_manifests()
RAY = ("ray.io", "v1")
SLIPWAY = ("slipway.dev", "v1alpha1")


def training_run(name: str, artifacts: Path, **spec: Any) -> dict[str, Any]:
    run = copy.deepcopy(TR)
    run["metadata"]["name"] = name
    run["spec"]["artifacts"] = {"uri": f"file://{artifacts}/"}
    run["spec"].update(spec)
    return run


def get(cluster: Cluster, group: tuple[str, str], plural: str, name: str) -> dict[str, Any] | None:
    items = cluster.custom.list_namespaced_custom_object(*group, NAMESPACE, plural)["items"]
    return next((i for i in items if i["metadata"]["name"] == name), None)


def run_status(cluster: Cluster, name: str) -> dict[str, Any]:
    return (get(cluster, SLIPWAY, "trainingruns", name) or {}).get("status") or {}


def test_kuberay_builds_the_gpu_cluster_and_the_run_follows_its_status(conformance: Cluster, tmp_path: Path) -> None:
    conformance.apply(NAMESPACE, training_run("gpu-run", tmp_path))  # 2 workers x 1 GPU, as in the contract
    rayjob = wait_for(
        lambda: (
            (j := get(conformance, RAY, "rayjobs", "gpu-run-0")) and (j.get("status") or {}).get("rayClusterName") and j
        ),
        timeout=60,
        what="KubeRay to take the RayJob and name its RayCluster",
    )
    status = rayjob["status"]
    assert status["jobDeploymentStatus"] == "Initializing" and status["startTime"]  # KubeRay's own first write
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True and rayjob["spec"]["entrypoint"].startswith("python -m ")

    cluster = wait_for(lambda: get(conformance, RAY, "rayclusters", status["rayClusterName"]), what="the RayCluster")
    (group,) = cluster["spec"]["workerGroupSpecs"]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert group["replicas"] == 2

    def pods() -> list[dict[str, Any]] | None:
        items = conformance.core.list_namespaced_pod(
            NAMESPACE, label_selector=f"ray.io/cluster={cluster['metadata']['name']}"
        )
        found = [conformance.core.api_client.sanitize_for_serialization(p) for p in items.items]
        return found if len(found) == 3 else None  # the head and two workers

    made = wait_for(pods, timeout=60, what="KubeRay to create the head and worker pods")
    gpus = [p for p in made if "nvidia.com/gpu" in p["spec"]["containers"][0]["resources"].get("limits", {})]
    assert len(gpus) == 2 and all(p["spec"]["tolerations"] for p in gpus)
    env = {e["name"] for p in made for c in p["spec"]["containers"] for e in c.get("env", [])}
    assert "RAY_ADDRESS" in env or "RAY_CLUSTER_NAME" in env, env  # KubeRay's own wiring of the pods

    # The scheduler puts the GPU workers on the GPU node (the only one with nvidia.com/gpu, tainted
    # for pods that tolerate it) and the head on the CPU node; kwok runs them with loopback IPs.
    def placed() -> dict[str, str] | None:
        items = conformance.core.list_namespaced_pod(
            NAMESPACE, label_selector=f"ray.io/cluster={cluster['metadata']['name']}"
        )
        running = {p.metadata.name: p.spec.node_name for p in items.items if p.status.phase == "Running"}
        ips = [p.status.pod_ip or "" for p in items.items]
        return running if len(running) == 3 and all(ip.startswith("127.") for ip in ips) else None

    nodes = wait_for(placed, timeout=60, what="the head and both workers Running on kwok's nodes")
    assert sorted(nodes.values()) == ["cpu-0", "gpu-0", "gpu-0"], nodes

    # Then KubeRay finds the cluster ready and starts the job (K8sJobMode: its submitter Job, which
    # kwok runs to completion). The run lifts KubeRay's own status, never one a test wrote; its phase
    # stays Pending because the Ray job itself never reports RUNNING here: KubeRay reads that from
    # the Ray dashboard, which it cannot reach (the dead-end proxy), so jobStatus stays unset.
    current = wait_for(
        lambda: (
            (s := run_status(conformance, "gpu-run")).get("rayJob", {}).get("jobDeploymentStatus") == "Running" and s
        ),
        timeout=60,
        what="KubeRay's Running, lifted into the run",
    )
    assert current["rayJob"]["name"] == "gpu-run-0" and current["phase"] == "Pending", current
    assert current["rayJob"].get("jobStatus", "") in ("", "PENDING"), current
    batch = client.BatchV1Api(conformance.core.api_client)
    (submitter,) = wait_for(lambda: batch.list_namespaced_job(NAMESPACE).items, what="KubeRay's submitter Job")
    commands = [" ".join([*(c.command or []), *(c.args or [])]) for c in submitter.spec.template.spec.containers]
    assert any("ray job submit" in c and "python -m " in c for c in commands), commands
    wait_for(
        lambda: (batch.read_namespaced_job_status(submitter.metadata.name, NAMESPACE).status.succeeded or 0) >= 1,
        timeout=60,
        what="kwok to run the submitter's pod to completion",
    )


def test_kuberay_deadline_fails_the_run_once_and_its_cluster_goes(conformance: Cluster, tmp_path: Path) -> None:
    """KubeRay counts activeDeadlineSeconds from the RayJob's start and fails it with
    DeadlineExceeded; the run fails with that reason and is not retried (it would miss it again),
    and with ttlSecondsAfterFinished 0 KubeRay removes the attempt's RayCluster at once."""
    run = training_run("late-run", tmp_path, activeDeadlineSeconds=3, ttlSecondsAfterFinished=0, backoffLimit=2)
    conformance.apply(NAMESPACE, run)
    done = wait_for(
        lambda: (s := run_status(conformance, "late-run")).get("phase") == "Failed" and s,
        timeout=90,
        what="the deadline",
    )
    failed = {c["type"]: c for c in done["conditions"]}["Failed"]
    assert failed["reason"] == "DeadlineExceeded", done
    rayjob = get(conformance, RAY, "rayjobs", "late-run-0")
    assert rayjob is not None
    assert (rayjob["status"]["jobDeploymentStatus"], rayjob["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    assert get(conformance, RAY, "rayjobs", "late-run-1") is None and done.get("attempt", 0) == 0
    wait_for(
        lambda: get(conformance, RAY, "rayclusters", rayjob["status"]["rayClusterName"]) is None,
        timeout=60,
        what="KubeRay to delete the failed attempt's RayCluster",
    )


def test_a_run_no_node_can_hold_stays_pending_until_its_deadline(conformance: Cluster, tmp_path: Path) -> None:
    """A worker asking for more GPUs than any node has is never scheduled (the real scheduler says
    why); KubeRay keeps the RayJob Initializing, the run stays Pending with KubeRay's status, and
    KubeRay's deadline then fails it once, with no retry."""
    scaling = {"workers": 1, "gpusPerWorker": 8, "cpusPerWorker": 1, "memoryPerWorker": "1Gi"}  # gpu-0 has 4
    run = training_run("big-run", tmp_path, scaling=scaling, activeDeadlineSeconds=15, backoffLimit=2)
    conformance.apply(NAMESPACE, run)

    def unschedulable() -> str | None:
        for pod in conformance.core.list_namespaced_pod(NAMESPACE, label_selector="ray.io/node-type=worker").items:
            if not pod.metadata.name.startswith("big-run"):
                continue
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                    return str(condition.message)
        return None

    message = wait_for(unschedulable, timeout=60, what="the scheduler to refuse the 8-GPU worker")
    assert "nvidia.com/gpu" in message, message
    waiting = run_status(conformance, "big-run")
    assert waiting["phase"] == "Pending", waiting
    assert waiting.get("rayJob", {}).get("jobDeploymentStatus") in (None, "", "Initializing"), waiting

    done = wait_for(
        lambda: (s := run_status(conformance, "big-run")).get("phase") == "Failed" and s,
        timeout=90,
        what="KubeRay's deadline",
    )
    assert {c["type"]: c for c in done["conditions"]}["Failed"]["reason"] == "DeadlineExceeded", done
    assert get(conformance, RAY, "rayjobs", "big-run-1") is None and done.get("attempt", 0) == 0


def test_deleting_a_run_takes_its_rayjob_cluster_and_pods_through_the_garbage_collector(
    conformance: Cluster, tmp_path: Path
) -> None:
    conformance.apply(NAMESPACE, training_run("gone-run", tmp_path, scaling={"workers": 1}))
    rayjob = wait_for(
        lambda: (
            (j := get(conformance, RAY, "rayjobs", "gone-run-0"))
            and (j.get("status") or {}).get("rayClusterName")
            and j
        ),
        timeout=60,
        what="KubeRay to make the attempt's RayCluster",
    )
    cluster_name = rayjob["status"]["rayClusterName"]
    selector = f"ray.io/cluster={cluster_name}"
    wait_for(lambda: conformance.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items, what="its pods")
    conformance.custom.delete_namespaced_custom_object(*SLIPWAY, NAMESPACE, "trainingruns", "gone-run")
    wait_for(
        lambda: (
            get(conformance, RAY, "rayjobs", "gone-run-0") is None
            and get(conformance, RAY, "rayclusters", cluster_name) is None
            and not conformance.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
        ),
        timeout=90,
        what="the garbage collector to remove the RayJob, its RayCluster and its pods",
    )


def test_deleting_a_deployment_takes_its_inferenceservices_and_route(conformance: Cluster) -> None:
    """Ours (the InferenceService, the HTTPRoute) and, through them, KServe's (the predictor
    Deployment, its pods, KServe's own routes): the garbage collector removes them all."""
    _, version, deployment = contract_manifests()
    conformance.apply(NAMESPACE, version, deployment)
    apps = client.AppsV1Api(conformance.core.api_client)
    selector = "serving.kserve.io/inferenceservice=churn-v3"

    def children() -> tuple[list[str], list[str], list[str]]:
        isvcs = conformance.custom.list_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices"
        )
        routes = conformance.custom.list_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes"
        )
        kserve_made = apps.list_namespaced_deployment(NAMESPACE, label_selector=selector).items
        return (
            [i["metadata"]["name"] for i in isvcs["items"]],
            [r["metadata"]["name"] for r in routes["items"]],
            [d.metadata.name for d in kserve_made],
        )

    wait_for(
        lambda: (c := children())[0] == ["churn-v3"] and "churn" in c[1] and c[2] == ["churn-v3-predictor"],
        what="the children, and KServe's Deployment",
    )
    conformance.custom.delete_namespaced_custom_object(*SLIPWAY, NAMESPACE, "modeldeployments", "churn")
    wait_for(lambda: children() == ([], [], []), timeout=60, what="the garbage collector to remove them")
    wait_for(
        lambda: not conformance.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items,
        timeout=60,
        what="the predictor's pods to go",
    )
