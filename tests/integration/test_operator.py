"""The operator against the real kube-apiserver: children, status lifting, restarts, columns."""

from __future__ import annotations

import copy
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support import GATEWAY, Cluster, accept_route, contract_manifests, mark_ready, wait_for, write_manifest

pytestmark = pytest.mark.integration

TR, MV, MD = contract_manifests()
GROUP, VERSION = "slipway.dev", "v1alpha1"


def get(
    cluster: Cluster, namespace: str, plural: str, name: str, group: str = GROUP, version: str = VERSION
) -> dict[str, Any] | None:
    items = cluster.custom.list_namespaced_custom_object(group, version, namespace, plural)["items"]
    return next((i for i in items if i["metadata"]["name"] == name), None)


def children(cluster: Cluster, namespace: str, group: str, version: str, plural: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.custom.list_namespaced_custom_object(group, version, namespace, plural)[
        "items"
    ]
    return items


def rayjobs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return children(cluster, namespace, "ray.io", "v1", "rayjobs")


def isvcs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return children(cluster, namespace, "serving.kserve.io", "v1beta1", "inferenceservices")


def set_status(
    cluster: Cluster, namespace: str, group: str, version: str, plural: str, name: str, status: dict[str, Any]
) -> None:
    """Write a child's status the way its controller (KubeRay, KServe) does: the status subresource."""
    cluster.custom.patch_namespaced_custom_object_status(group, version, namespace, plural, name, {"status": status})


def phase(cluster: Cluster, namespace: str, plural: str, name: str) -> str | None:
    obj = get(cluster, namespace, plural, name)
    return ((obj or {}).get("status") or {}).get("phase")


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}


def events_for(cluster: Cluster, namespace: str, name: str) -> list[str]:
    items = cluster.core.list_namespaced_event(namespace).items
    return [e.reason for e in items if e.involved_object.name == name]


def test_training_run_makes_one_owned_rayjob(operator: Cluster, namespace: str) -> None:
    operator.apply(namespace, TR)
    run = TR["metadata"]["name"]
    job = wait_for(lambda: next(iter(rayjobs(operator, namespace)), None), what="the RayJob")
    tr = get(operator, namespace, "trainingruns", run)
    assert tr is not None
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "TrainingRun",
        run,
        tr["metadata"]["uid"],
        True,
    )
    assert job["metadata"]["labels"]["slipway.dev/training-run"] == run
    assert job["metadata"]["labels"]["slipway.dev/model"] == "churn"
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert worker["replicas"] == 2
    limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert job["spec"]["activeDeadlineSeconds"] == 7200 and job["spec"]["shutdownAfterJobFinishes"] is True
    assert wait_for(lambda: phase(operator, namespace, "trainingruns", run) == "Pending", what="phase Pending")
    status = get(operator, namespace, "trainingruns", run)["status"]  # type: ignore[index]
    assert status["rayJob"]["name"] == job["metadata"]["name"]


def test_rayjob_status_moves_the_run_through_its_phases(operator: Cluster, namespace: str, tmp_path: Path) -> None:
    run = TR["metadata"]["name"]
    tr = copy.deepcopy(TR)
    tr["spec"]["artifacts"]["uri"] = f"file://{tmp_path}/"
    write_manifest(tmp_path, run, auc=0.9)
    operator.apply(namespace, tr)
    job = wait_for(lambda: next(iter(rayjobs(operator, namespace)), None), what="the RayJob")["metadata"]["name"]
    wait_for(lambda: phase(operator, namespace, "trainingruns", run) == "Pending", what="Pending")
    set_status(
        operator,
        namespace,
        "ray.io",
        "v1",
        "rayjobs",
        job,
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "startTime": "2026-11-22T09:00:00Z"},
    )
    wait_for(lambda: phase(operator, namespace, "trainingruns", run) == "Running", what="Running")
    set_status(
        operator,
        namespace,
        "ray.io",
        "v1",
        "rayjobs",
        job,
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "endTime": "2026-11-22T09:30:00Z"},
    )
    wait_for(lambda: phase(operator, namespace, "trainingruns", run) == "Succeeded", what="Succeeded")
    tr = get(operator, namespace, "trainingruns", run)
    assert tr is not None
    assert (
        tr["status"]["startTime"] == "2026-11-22T09:00:00Z" and tr["status"]["completionTime"] == "2026-11-22T09:30:00Z"
    )
    assert conditions(tr)["Complete"]["status"] == "True"
    assert tr["status"]["modelVersion"] == "churn-v1"
    wait_for(
        lambda: {"RayJobRunning", "ModelVersionRegistered"} <= set(events_for(operator, namespace, run)), what="events"
    )


def test_failed_rayjob_fails_the_run_with_its_reason(operator: Cluster, namespace: str) -> None:
    operator.apply(namespace, TR)
    run = TR["metadata"]["name"]
    job = wait_for(lambda: next(iter(rayjobs(operator, namespace)), None), what="the RayJob")["metadata"]["name"]
    wait_for(lambda: phase(operator, namespace, "trainingruns", run) == "Pending", what="Pending")
    set_status(
        operator,
        namespace,
        "ray.io",
        "v1",
        "rayjobs",
        job,
        {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "deadline"},
    )
    wait_for(lambda: phase(operator, namespace, "trainingruns", run) == "Failed", what="Failed")
    failed = conditions(get(operator, namespace, "trainingruns", run))["Failed"]
    assert (failed["status"], failed["reason"]) == ("True", "DeadlineExceeded")
    wait_for(lambda: "DeadlineExceeded" in events_for(operator, namespace, run), what="a warning event")


def test_deployment_serves_the_resolved_version_and_lifts_kserve_status(operator: Cluster, namespace: str) -> None:
    operator.apply(namespace, MV, MD)
    isvc = wait_for(lambda: next(iter(isvcs(operator, namespace)), None), what="the InferenceService")
    md = get(operator, namespace, "modeldeployments", "churn")
    assert md is not None
    assert isvc["metadata"]["name"] == "churn-v3"  # gateway traffic: one InferenceService per version
    owner = isvc["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("ModelDeployment", md["metadata"]["uid"])
    container = isvc["spec"]["predictor"]["containers"][0]
    assert {"name": "STORAGE_URI", "value": "s3://models/churn/3/"} in container["env"]
    assert isvc["metadata"]["labels"]["slipway.dev/version"] == "3"
    route = wait_for(lambda: get(operator, namespace, "httproutes", "churn", *GATEWAY), what="the HTTPRoute")
    assert route["spec"]["hostnames"] == [f"churn.{namespace}.example.com"]
    assert [(r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]] == [("churn-v3-predictor", 100)]
    wait_for(lambda: phase(operator, namespace, "modeldeployments", "churn") == "Progressing", what="Progressing")
    mark_ready(operator, namespace, isvc)
    assert phase(operator, namespace, "modeldeployments", "churn") == "Progressing"  # the route is not in effect yet
    accept_route(operator, namespace, route)
    wait_for(lambda: phase(operator, namespace, "modeldeployments", "churn") == "Stable", what="Stable")
    status = get(operator, namespace, "modeldeployments", "churn")["status"]  # type: ignore[index]
    assert (status["stableVersion"], status["url"], status["canaryWeight"]) == (
        3,
        f"http://churn.{namespace}.example.com",
        0,
    )
    assert status["observedGeneration"] == md["metadata"]["generation"]
    assert conditions(get(operator, namespace, "modeldeployments", "churn"))["Ready"]["status"] == "True"
    wait_for(lambda: "Promoted" in events_for(operator, namespace, "churn"), what="Promoted event")


def test_missing_model_version_is_a_condition_until_it_appears(operator: Cluster, namespace: str) -> None:
    pinned = copy.deepcopy(MD)
    pinned["spec"]["version"] = 4
    operator.apply(namespace, pinned)

    def not_found() -> dict[str, Any] | None:
        cond = conditions(get(operator, namespace, "modeldeployments", "churn")).get("VersionResolved")
        return cond if cond and cond["reason"] == "ModelVersionNotFound" else None

    cond = wait_for(not_found, what="ModelVersionNotFound")
    assert cond["status"] == "False" and "4" in cond["message"]
    assert isvcs(operator, namespace) == []
    assert operator.operator and operator.operator.proc and operator.operator.proc.poll() is None  # no crash
    v4 = copy.deepcopy(MV)
    v4["metadata"]["name"], v4["spec"]["version"], v4["spec"]["uri"] = "churn-v4", 4, "s3://models/churn/4/"
    operator.apply(namespace, v4)
    isvc = wait_for(lambda: next(iter(isvcs(operator, namespace)), None), timeout=30, what="the InferenceService")
    assert isvc["metadata"]["labels"]["slipway.dev/version"] == "4"


def test_spec_update_is_reconciled_and_foreign_fields_survive(operator: Cluster, namespace: str) -> None:
    operator.apply(namespace, MV, MD)
    wait_for(lambda: next(iter(isvcs(operator, namespace)), None), what="the InferenceService")
    labelled = operator.kubectl("label", "-n", namespace, "inferenceservice/churn-v3", "team=fraud")
    assert labelled.returncode == 0, labelled.stderr
    updated = copy.deepcopy(MD)
    updated["spec"]["predictor"]["image"] = "ghcr.io/example/slipway-predictor:0.2.0"
    updated["spec"]["predictor"]["maxReplicas"] = 8
    operator.apply(namespace, updated)

    def rolled() -> dict[str, Any] | None:
        isvc = next(iter(isvcs(operator, namespace)), None)
        return isvc if isvc and isvc["spec"]["predictor"]["containers"][0]["image"].endswith(":0.2.0") else None

    isvc = wait_for(rolled, what="the new predictor image")
    assert isvc["spec"]["predictor"]["maxReplicas"] == 8
    assert isvc["metadata"]["labels"]["team"] == "fraud"  # not ours: left alone
    assert len(isvcs(operator, namespace)) == 1


def test_deleted_inferenceservice_is_recreated(operator: Cluster, namespace: str) -> None:
    operator.apply(namespace, MV, MD)
    first = wait_for(lambda: next(iter(isvcs(operator, namespace)), None), what="the InferenceService")
    operator.custom.delete_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "churn-v3"
    )

    def recreated() -> dict[str, Any] | None:
        isvc = next(iter(isvcs(operator, namespace)), None)
        return isvc if isvc and isvc["metadata"]["uid"] != first["metadata"]["uid"] else None

    wait_for(recreated, what="a new InferenceService")


def test_killed_operator_resumes_without_duplicates(operator: Cluster, namespace: str) -> None:
    operator.apply(namespace, TR)
    run = TR["metadata"]["name"]
    job = wait_for(lambda: next(iter(rayjobs(operator, namespace)), None), what="the RayJob")["metadata"]["name"]
    wait_for(lambda: phase(operator, namespace, "trainingruns", run) == "Pending", what="Pending")
    assert operator.operator is not None
    operator.operator.kill()  # SIGKILL mid-way: no cleanup, no peering farewell

    # While it is down: KubeRay moves the job on, and new objects arrive.
    set_status(
        operator, namespace, "ray.io", "v1", "rayjobs", job, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    )
    second = copy.deepcopy(TR)
    second["metadata"]["name"] = "churn-second"
    operator.apply(namespace, second, MV, MD)

    operator.start_operator()
    wait_for(lambda: phase(operator, namespace, "trainingruns", run) == "Running", timeout=60, what="resumed Running")
    wait_for(lambda: len(rayjobs(operator, namespace)) == 2, timeout=60, what="the second run's RayJob")
    wait_for(lambda: len(isvcs(operator, namespace)) == 1, timeout=60, what="the InferenceService")
    # Exactly one child per parent, even after the restart re-ran every resume handler.
    by_owner = sorted(j["metadata"]["labels"]["slipway.dev/training-run"] for j in rayjobs(operator, namespace))
    assert by_owner == ["churn-2026-11-22", "churn-second"]
    status = get(operator, namespace, "trainingruns", run)["status"]  # type: ignore[index]
    assert status["rayJob"] == {"name": job, "jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}
    assert conditions(get(operator, namespace, "trainingruns", run))["Running"]["status"] == "True"


def test_kubectl_get_shows_the_printer_columns(operator: Cluster, namespace: str) -> None:
    operator.apply(namespace, TR, MV, MD)
    wait_for(lambda: phase(operator, namespace, "trainingruns", TR["metadata"]["name"]), what="a run phase")
    wait_for(lambda: phase(operator, namespace, "modeldeployments", "churn"), what="a deployment phase")
    wait_for(lambda: (get(operator, namespace, "modelversions", "churn-v3") or {}).get("status"), what="version status")
    out = operator.kubectl("get", "tr,mv,md", "-n", namespace).stdout
    lines = [line.split() for line in out.splitlines() if line.strip()]
    headers = [line for line in lines if line[0] == "NAME"]
    assert headers == [
        ["NAME", "MODEL", "PHASE", "WORKERS", "GPUS", "METRIC", "VERSION", "AGE"],
        ["NAME", "MODEL", "VERSION", "METRIC", "GATES", "AGE"],
        ["NAME", "MODEL", "STRATEGY", "STABLE", "CANDIDATE", "WEIGHT", "SHADOW", "STEP", "PHASE", "REASON", "AGE"],
    ], out
    rows = {line[0].split("/")[0]: line for line in lines if line[0] != "NAME"}
    assert rows["trainingrun.slipway.dev"][1:5] == ["churn", "Pending", "2", "1"]
    assert rows["modelversion.slipway.dev"][1:5] == ["churn", "3", "auc=0.86", "true"]
    # The first version goes straight to 100% (nothing to compare it with); not ready yet.
    assert rows["modeldeployment.slipway.dev"][1:6] == ["churn", "Canary", "3", "100", "Progressing"], out
    category = operator.kubectl("get", "slipway", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(n.split("/")[0] for n in category) == [
        "modeldeployment.slipway.dev",
        "modelversion.slipway.dev",
        "trainingrun.slipway.dev",
    ]


def test_liveness_endpoint_answers(operator: Cluster) -> None:
    def healthz() -> str | None:
        try:
            with urllib.request.urlopen(operator.liveness_url, timeout=2) as response:
                return response.read().decode() if response.status == 200 else None
        except OSError:
            return None

    assert json.loads(wait_for(healthz, what="/healthz")) == {"api": True}


def test_operator_exports_reconcile_metrics(operator: Cluster, namespace: str) -> None:
    operator.apply(namespace, TR)
    wait_for(lambda: phase(operator, namespace, "trainingruns", TR["metadata"]["name"]), what="a run phase")

    def scraped() -> str | None:
        try:
            with urllib.request.urlopen(operator.metrics_url, timeout=2) as response:
                text: str = response.read().decode()
        except OSError:
            return None
        return text if 'slipway_reconciles_total{kind="TrainingRun",result="ok"}' in text else None

    text = wait_for(scraped, what="the reconcile counter")
    pending = next(line for line in text.splitlines() if line.startswith('slipway_training_runs{phase="Pending"}'))
    assert float(pending.split()[-1]) >= 1, pending  # this run, at least (other tests' runs may be counted too)


def test_a_run_without_an_image_and_no_platform_default_fails_naming_the_field(
    operator: Cluster, namespace: str
) -> None:
    run = copy.deepcopy(TR)
    del run["spec"]["image"]  # the operator here has no SLIPWAY_TRAINER_IMAGE
    operator.apply(namespace, run)
    name = run["metadata"]["name"]
    assert wait_for(lambda: phase(operator, namespace, "trainingruns", name) == "Failed", what="phase Failed")
    failed = conditions(get(operator, namespace, "trainingruns", name))["Failed"]
    assert failed["reason"] == "InvalidSpec"
    assert "spec.image is not set" in failed["message"] and "images.trainer" in failed["message"]
    assert wait_for(lambda: "InvalidSpec" in events_for(operator, namespace, name), what="an InvalidSpec event")
    assert rayjobs(operator, namespace) == []


def test_a_deployment_without_a_predictor_image_says_which_field(operator: Cluster, namespace: str) -> None:
    md = copy.deepcopy(MD)
    del md["spec"]["predictor"]["image"]  # the operator here has no SLIPWAY_PREDICTOR_IMAGE
    operator.apply(namespace, MV, md)
    name = md["metadata"]["name"]

    def refused() -> dict[str, Any] | None:
        status = (get(operator, namespace, "modeldeployments", name) or {}).get("status") or {}
        return status if status.get("reason") == "InvalidSpec" else None

    assert "spec.predictor.image is not set" in wait_for(refused, what="reason InvalidSpec")["message"]
    assert isvcs(operator, namespace) == []
