"""The chart's ClusterRole is exactly what the operator calls: nothing missing, nothing spare.

A control plane of its own records every request of the chart's ServiceAccount (the API server's
audit log). The operator runs as that account with the chart's RBAC through each path that makes
API calls: start-up and peering, a TrainingRun that succeeds (RayJob, version counter, ModelVersion)
and one that fails and retries, a blue-green rollout whose old version is scaled down, a switch
from gateway to kserve traffic (children deleted), a TrainingSchedule whose retrained run succeeds
and is pruned (runs created and deleted), a BatchPrediction of `latest` that succeeds (versions
listed, RayJob, status), and a namespaced operator. Then the set of
(group, resource, verb) it used must equal the set the ClusterRole grants, and nothing was refused.
On the way, a credential in its environment and in a referenced Secret never reaches its log.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slipway.api.batchprediction import BatchManifest
from slipway.api.resources import RETRAIN_ANNOTATION
from slipway.reconcile.trainingschedule import run_name
from tests.support import (
    OPERATOR_USER,
    Cluster,
    Controllers,
    audited_cluster,
    contract_manifests,
    finish_job,
    render_chart,
    wait_for,
    write_manifest,
)

pytestmark = pytest.mark.integration

TR, MV, MD = contract_manifests()
Call = tuple[str, str, str]
# A credential in the operator's own environment and in a Secret a run references: it must
# never show up in the operator's log (at DEBUG) or in anything the operator writes.
SENTINEL = "sentinel-9f1c2e7d-credential"  # API group ("" for core), resource[/subresource], verb


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with audited_cluster(tmp_path_factory.mktemp("rbac")) as cluster:
        yield cluster


# Kopf patches our parents themselves only to keep a failing handler's progress (its retries and
# backoff, so that they survive a restart) and to take off a finalizer an older operator left:
# granted, and unused while every handler succeeds (handlers/persistence.py).
PARENTS = ("trainingruns", "modeldeployments", "modelversions", "batchpredictions")
ON_FAILURE_ONLY: set[Call] = {("slipway.dev", plural, "patch") for plural in PARENTS}


def granted() -> set[Call]:
    (role,) = [doc for doc in render_chart() if doc["kind"] == "ClusterRole"]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def audit_events(log: Path) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in events if e["user"]["username"] == OPERATOR_USER and "objectRef" in e]


def calls(event: dict[str, Any]) -> set[Call]:
    """What RBAC checked for one request: a server-side apply that made the object (201) is
    authorized as a patch and as a create."""
    ref = event["objectRef"]
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    verbs = {event["verb"]}
    if event["verb"] == "patch" and event.get("responseStatus", {}).get("code") == 201:
        verbs.add("create")
    return {(ref.get("apiGroup", ""), resource, verb) for verb in verbs}


def new_namespace(cluster: Cluster, name: str) -> str:
    cluster.core.create_namespace({"metadata": {"name": name}})
    return name


def training_run(name: str, artifacts: Path, **spec: Any) -> dict[str, Any]:
    tr = copy.deepcopy(TR)
    tr["metadata"]["name"] = name
    tr["spec"]["artifacts"]["uri"] = f"file://{artifacts}/"
    tr["spec"]["evaluation"]["mustBeatServing"] = False
    tr["spec"].update(spec)
    return tr


def run_phase(cluster: Cluster, namespace: str, name: str) -> str:
    tr = cluster.custom.get_namespaced_custom_object("slipway.dev", "v1alpha1", namespace, "trainingruns", name)
    return str((tr.get("status") or {}).get("phase", ""))


def deployment_status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    md = cluster.custom.get_namespaced_custom_object("slipway.dev", "v1alpha1", namespace, "modeldeployments", "churn")
    return dict(md.get("status") or {})


def children(cluster: Cluster, namespace: str, group: str, version: str, plural: str) -> list[str]:
    items = cluster.custom.list_namespaced_custom_object(group, version, namespace, plural)["items"]
    return sorted(item["metadata"]["name"] for item in items)


def exercise_training(cluster: Cluster, namespace: str, artifacts: Path) -> None:
    runs = [training_run(name, artifacts) for name in ("good", "better")]
    runs[0]["spec"]["artifacts"]["credentialsSecret"] = "models-s3"
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "models-s3"}, "stringData": {"AWS_SECRET_ACCESS_KEY": SENTINEL}}
    )
    for run in runs:
        write_manifest(artifacts, run["metadata"]["name"], auc=0.91)
    cluster.apply(namespace, *runs, training_run("flaky", artifacts, backoffLimit=1))
    for job in ("good-0", "better-0", "flaky-0"):
        wait_for(lambda job=job: job in children(cluster, namespace, "ray.io", "v1", "rayjobs"), what=job)
    finish_job(cluster, namespace, "flaky-0", succeeded=False, message="worker OOMKilled")
    # Two versions in one namespace: the first makes the version counter, the second updates it.
    for name in ("good", "better"):
        finish_job(cluster, namespace, f"{name}-0", succeeded=True)
        wait_for(lambda name=name: run_phase(cluster, namespace, name) == "Succeeded", what=f"{name} Succeeded")
    wait_for(lambda: "flaky-1" in children(cluster, namespace, "ray.io", "v1", "rayjobs"), what="the retry")
    finish_job(cluster, namespace, "flaky-1", succeeded=False, message="worker OOMKilled")
    wait_for(lambda: run_phase(cluster, namespace, "flaky") == "Failed", what="flaky Failed")


def exercise_rollout(cluster: Cluster, namespace: str) -> None:
    """Blue-green from the registered version 2 to a hand-registered version 3, then kserve traffic."""
    controllers = Controllers(cluster, namespace)
    controllers.thread.start()
    try:
        md = copy.deepcopy(MD)
        md["spec"]["version"] = "latest"
        md["spec"]["strategy"] = {"type": "BlueGreen", "blueGreen": {"scaleDownDelay": "1s"}}
        cluster.apply(namespace, md)
        wait_for(lambda: deployment_status(cluster, namespace).get("stableVersion") == 2, what="version 2 stable")
        mv = copy.deepcopy(MV)
        mv["metadata"]["name"] = "churn-v3"
        mv["spec"].update(version=3, uri="s3://models/churn/3/")
        cluster.apply(namespace, mv)
        wait_for(
            lambda: children(cluster, namespace, "serving.kserve.io", "v1beta1", "inferenceservices") == ["churn-v3"],
            what="version 2 scaled down",
        )
        md["spec"]["traffic"] = "kserve"
        cluster.apply(namespace, md)
        wait_for(
            lambda: (
                children(cluster, namespace, "serving.kserve.io", "v1beta1", "inferenceservices") == ["churn"]
                and not children(cluster, namespace, "gateway.networking.k8s.io", "v1", "httproutes")
            ),
            what="gateway children replaced by one kserve InferenceService",
        )
    finally:
        controllers.stop.set()
        controllers.thread.join(timeout=5)


def exercise_schedule(cluster: Cluster, namespace: str, artifacts: Path) -> None:
    """A TrainingSchedule's retrain makes a run (create); its end beyond a history of 0 deletes it. The
    model misses its gate, so no new version starts a rollout behind the test's back."""
    template = training_run("template", artifacts)["spec"]
    schedule = {
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "TrainingSchedule",
        "metadata": {"name": "nightly", "annotations": {RETRAIN_ANNOTATION: "r1"}},
        "spec": {"template": template, "successfulRunsHistoryLimit": 0, "failedRunsHistoryLimit": 0},
    }
    run = run_name("nightly", "manual", "r1")
    write_manifest(artifacts, run, auc=0.5)
    cluster.apply(namespace, schedule)
    wait_for(lambda: f"{run}-0" in children(cluster, namespace, "ray.io", "v1", "rayjobs"), what="the scheduled run")
    finish_job(cluster, namespace, f"{run}-0", succeeded=True)
    wait_for(lambda: run not in children(cluster, namespace, "slipway.dev", "v1alpha1", "trainingruns"), what="pruned")


def exercise_batch(cluster: Cluster, namespace: str, output: Path) -> None:
    """A BatchPrediction of `latest` (the ModelVersions listed, a read), its RayJob and its success."""
    prediction = {
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "BatchPrediction",
        "metadata": {"name": "scores"},
        "spec": {
            "model": "churn",
            "image": "trainer:1",
            "featureService": "churn_v1",
            "input": {"uri": "file:///data/customers.parquet"},
            "output": {"uri": f"file://{output}/"},
        },
    }
    cluster.apply(namespace, prediction)
    wait_for(lambda: "scores-0" in children(cluster, namespace, "ray.io", "v1", "rayjobs"), what="the scoring job")

    def recorded(field: str) -> str:
        found = cluster.custom.get_namespaced_custom_object(
            "slipway.dev", "v1alpha1", namespace, "batchpredictions", "scores"
        )
        return str((found.get("status") or {}).get(field, ""))

    name = wait_for(lambda: recorded("modelVersion"), what="the resolved version")
    number = int(name.rsplit("-v", 1)[1])
    manifest = BatchManifest(
        batch_prediction="scores",
        attempt=0,
        model="churn",
        version=number,
        model_version=name,
        feature_service="churn_v1",
        input="file:///data/customers.parquet",
        rows_read=10,
        rows_written=10,
        seconds=1.0,
    )
    output.mkdir(parents=True, exist_ok=True)
    (output / "manifest.json").write_text(manifest.model_dump_json(by_alias=True))
    finish_job(cluster, namespace, "scores-0", succeeded=True)
    wait_for(lambda: recorded("phase") == "Succeeded", what="the prediction Succeeded")


def test_cluster_role_is_exactly_what_the_operator_calls(audited: Cluster, tmp_path: Path) -> None:
    cluster = audited
    cluster.start_operator(env={"SLIPWAY_LOG_LEVEL": "DEBUG", "AWS_SECRET_ACCESS_KEY": SENTINEL})
    training = new_namespace(cluster, "rbac-training")
    exercise_training(cluster, training, tmp_path)
    exercise_batch(cluster, training, tmp_path / "predictions")  # scores with a version the runs registered
    exercise_rollout(cluster, training)  # serves the versions the runs registered
    exercise_schedule(cluster, training, tmp_path)
    assert cluster.operator is not None
    cluster.operator.stop()

    watched = new_namespace(cluster, "rbac-watched")
    cluster.start_operator(watched)
    cluster.apply(watched, training_run("watched", tmp_path))
    wait_for(lambda: children(cluster, watched, "ray.io", "v1", "rayjobs") == ["watched-0"], what="namespaced run")
    # Kopf lists the namespaces, then watches them; the child can be made in between, so the
    # watch is awaited in the audit log, not assumed, before this operator stops.
    assert cluster.plane.audit_log is not None
    audit_log = cluster.plane.audit_log
    wait_for(
        lambda: any(("", "namespaces", "watch") in calls(e) for e in audit_events(audit_log)),
        what="the namespaced operator's watch on namespaces",
    )
    cluster.operator.stop()

    events = audit_events(cluster.plane.audit_log)
    refused = sorted(set().union(*(calls(e) for e in events if e.get("responseStatus", {}).get("code") == 403)))
    assert not refused, f"the chart's RBAC refused the operator: {refused}"
    used: set[Call] = set().union(*(calls(e) for e in events))
    rules = granted()
    assert ("", "secrets", "get") not in used and ("", "secrets", "list") not in used
    assert SENTINEL not in cluster.operator_log()
    job = cluster.custom.get_namespaced_custom_object("ray.io", "v1", training, "rayjobs", "good-0")
    assert SENTINEL not in json.dumps(job)
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "models-s3"}}
    ]
    assert used == rules - ON_FAILURE_ONLY, (
        f"granted but never used (remove from helm/slipway/templates/clusterrole.yaml): "
        f"{sorted(rules - ON_FAILURE_ONLY - used)}\n"
        f"used but not granted: {sorted(used - rules)}"
    )
    assert rules >= ON_FAILURE_ONLY, sorted(ON_FAILURE_ONLY - rules)


def test_a_new_deployment_costs_one_status_write_and_no_read(audited: Cluster) -> None:
    """The operator's calls for a new deployment, from the audit log (bench/operator_scale.py
    measures what they cost at scale): its status is written once, already describing the
    InferenceService just applied, so that child's first events find nothing to change; a
    replica that never stood by for a peer writes from its watches without reading the
    deployment first; and neither its creation nor a change of its spec costs a patch of the
    deployment itself."""
    cluster = audited
    namespace = new_namespace(cluster, "rbac-calls")
    cluster.start_operator()
    cluster.apply(namespace, MV, MD)  # no KServe here: the InferenceService never reports ready
    wait_for(
        lambda: "has not reported readiness yet" in deployment_status(cluster, namespace).get("message", ""),
        what="the deployment waiting for its InferenceService",
    )
    assert cluster.plane.audit_log is not None
    audit_log = cluster.plane.audit_log

    def deployment_calls() -> list[dict[str, Any]]:
        return [
            e
            for e in audit_events(audit_log)
            if e["objectRef"].get("namespace") == namespace and e["objectRef"]["resource"] == "modeldeployments"
        ]

    created = deployment_calls()
    # A change of spec, handled after whatever Kopf would still have patched for the creation
    # (one worker per object, in order): once it is observed, both handled changes are logged.
    cluster.custom.patch_namespaced_custom_object(
        "slipway.dev", "v1alpha1", namespace, "modeldeployments", "churn", {"spec": {"predictor": {"maxReplicas": 5}}}
    )
    wait_for(lambda: deployment_status(cluster, namespace).get("observedGeneration") == 2, what="the spec change")
    handled = deployment_calls()
    assert cluster.operator is not None
    cluster.operator.stop()
    status_writes = [e for e in created if e["objectRef"].get("subresource") == "status" and e["verb"] == "patch"]
    reads = [e for e in created if e["verb"] in ("get", "list")]
    assert len(status_writes) == 1, [e["requestURI"] for e in status_writes]
    assert reads == [], [e["requestURI"] for e in reads]
    # Kopf's bookkeeping costs no call: the last handled spec is kept in the process, and the
    # deadline timer puts no finalizer on the deployment (handlers/persistence.py).
    bookkeeping = [e for e in handled if e["verb"] == "patch" and not e["objectRef"].get("subresource")]
    assert bookkeeping == [], [(e["requestURI"], e["responseStatus"]["code"]) for e in bookkeeping]
