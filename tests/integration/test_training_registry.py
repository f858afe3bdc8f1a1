"""A finished RayJob against the real apiserver: registry, gates, data validation, retries."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import pytest

from slipway.kube import Kube
from tests.support import Cluster, contract_manifests, finish_job, serve_first_version, wait_for, write_manifest

pytestmark = pytest.mark.integration

TR, MV, MD = contract_manifests()
RUN = TR["metadata"]["name"]


def run_with_artifacts(tmp_path: Path, name: str = RUN, **spec: Any) -> dict[str, Any]:
    tr = copy.deepcopy(TR)
    tr["metadata"]["name"] = name
    tr["spec"]["artifacts"]["uri"] = f"file://{tmp_path}/"
    tr["spec"].update(spec)
    return tr


def status(cluster: Cluster, namespace: str, plural: str, name: str) -> dict[str, Any]:
    items = cluster.custom.list_namespaced_custom_object("slipway.dev", "v1alpha1", namespace, plural)["items"]
    found = next((i for i in items if i["metadata"]["name"] == name), None)
    return (found or {}).get("status") or {}


def rayjob_names(cluster: Cluster, namespace: str) -> list[str]:
    items = cluster.custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs")["items"]
    return sorted(i["metadata"]["name"] for i in items)


def wait_phase(cluster: Cluster, namespace: str, name: str, phase: str) -> dict[str, Any]:
    return wait_for(
        lambda: (s := status(cluster, namespace, "trainingruns", name)) and s.get("phase") == phase and s,
        timeout=30,
        what=f"{name} {phase}",
    )


def model_versions(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.custom.list_namespaced_custom_object(
        "slipway.dev", "v1alpha1", namespace, "modelversions"
    )["items"]
    return items


def test_success_registers_a_gated_model_version_with_metrics_and_lineage(
    operator: Cluster, namespace: str, tmp_path: Path
) -> None:
    write_manifest(tmp_path, RUN, auc=0.91)
    operator.apply(namespace, MV, run_with_artifacts(tmp_path))  # v3 exists, registered by hand
    wait_for(lambda: rayjob_names(operator, namespace), what="the RayJob")
    wait_phase(operator, namespace, RUN, "Pending")
    finish_job(operator, namespace, f"{RUN}-0", succeeded=True)
    final = wait_phase(operator, namespace, RUN, "Succeeded")
    assert final["modelVersion"] == "churn-v4"  # after the hand-registered v3
    assert final["evaluation"] == {"metric": "auc", "value": 0.91, "passed": True}
    assert final["metrics"]["auc"] == "0.91"
    gates = {c["type"]: c for c in final["conditions"]}["GatesPassed"]
    assert gates["status"] == "True"
    mv = next(v for v in model_versions(operator, namespace) if v["metadata"]["name"] == "churn-v4")
    assert mv["spec"]["version"] == 4 and mv["spec"]["trainingRun"] == RUN
    assert mv["spec"]["uri"] == f"file://{tmp_path}/runs/{RUN}/"
    assert mv["spec"]["gates"]["passed"] is True
    assert mv["spec"]["lineage"]["featureService"] == "churn_v1"
    assert "ownerReferences" not in mv["metadata"]  # the registry outlives the run
    wait_for(
        lambda: status(operator, namespace, "modelversions", "churn-v4").get("gatesPassed") is True, what="MV status"
    )


def test_gate_failure_registers_nothing(operator: Cluster, namespace: str, tmp_path: Path) -> None:
    write_manifest(tmp_path, RUN, auc=0.7)  # the contract's minimum is 0.80
    operator.apply(namespace, run_with_artifacts(tmp_path))
    wait_phase(operator, namespace, RUN, "Pending")
    finish_job(operator, namespace, f"{RUN}-0", succeeded=True)
    final = wait_phase(operator, namespace, RUN, "Failed")
    failed = {c["type"]: c for c in final["conditions"]}["Failed"]
    assert failed["reason"] == "GateFailed" and "below the minimum 0.8" in failed["message"]
    assert final["evaluation"]["passed"] is False
    assert model_versions(operator, namespace) == []


def test_must_beat_serving_compares_with_the_served_version(operator: Cluster, namespace: str, tmp_path: Path) -> None:
    write_manifest(tmp_path, RUN, auc=0.85)  # above the minimum, below the served v3's 0.86
    operator.apply(namespace, MV, MD)
    serve_first_version(operator, namespace)
    wait_for(
        lambda: status(operator, namespace, "modeldeployments", "churn").get("stableVersion") == 3, what="serving v3"
    )
    operator.apply(namespace, run_with_artifacts(tmp_path))
    wait_phase(operator, namespace, RUN, "Pending")
    finish_job(operator, namespace, f"{RUN}-0", succeeded=True)
    final = wait_phase(operator, namespace, RUN, "Failed")
    # The job (a stand-in here) did not score v3 on its data: the recorded metric, and why.
    assert "does not beat version 3's recorded 0.8600 (the job did not score the serving model)" in final["message"]
    assert final["evaluation"]["comparedOn"] == "recordedMetric"
    assert [v["metadata"]["name"] for v in model_versions(operator, namespace)] == ["churn-v3"]


def test_must_beat_serving_compares_on_this_runs_data(operator: Cluster, namespace: str, tmp_path: Path) -> None:
    """The operator pins the serving version in status and names it to the job; the job scores it on
    its own held-out split; the gate compares the two numbers from the same (new) data."""
    import json

    import yaml

    from slipway.api.artifacts import MANIFEST_FILE

    folder = write_manifest(tmp_path, RUN, auc=0.84)  # below v3's recorded 0.86 ...
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["serving"] = {"version": 3, "uri": MV["spec"]["uri"], "metrics": {"auc": 0.79}}  # ... above it here
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    operator.apply(namespace, MV, MD)
    serve_first_version(operator, namespace)
    wait_for(
        lambda: status(operator, namespace, "modeldeployments", "churn").get("stableVersion") == 3, what="serving v3"
    )
    operator.apply(namespace, run_with_artifacts(tmp_path))
    wait_for(lambda: rayjob_names(operator, namespace), what="the RayJob")
    pinned = wait_phase(operator, namespace, RUN, "Pending")
    assert pinned["servingModel"] == {"version": 3, "uri": MV["spec"]["uri"]}
    job = operator.custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", f"{RUN}-0")
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert json.loads(env["SLIPWAY_TRAINING_RUN"])["serving"] == {"version": 3, "uri": MV["spec"]["uri"]}
    finish_job(operator, namespace, f"{RUN}-0", succeeded=True)
    final = wait_phase(operator, namespace, RUN, "Succeeded")
    assert final["evaluation"] == {
        "metric": "auc",
        "value": 0.84,
        "passed": True,
        "servingVersion": 3,
        "servingValue": 0.79,
        "comparedOn": "thisRunsData",
    }
    message = "auc 0.8400 on this run's held-out data, beating version 3's 0.7900 on the same data"
    gates = {c["type"]: c for c in final["conditions"]}["GatesPassed"]
    assert gates["status"] == "True" and gates["message"] == message
    mv = next(v for v in model_versions(operator, namespace) if v["metadata"]["name"] == final["modelVersion"])
    assert message in mv["spec"]["gates"]["reason"]


def test_data_validation_failure_has_its_reason_and_no_retry(operator: Cluster, namespace: str, tmp_path: Path) -> None:
    write_manifest(tmp_path, RUN, auc=0.9, passed_validation=False)
    operator.apply(namespace, run_with_artifacts(tmp_path))
    wait_phase(operator, namespace, RUN, "Pending")
    finish_job(operator, namespace, f"{RUN}-0", succeeded=False, message="exit code 3")
    final = wait_phase(operator, namespace, RUN, "Failed")
    failed = {c["type"]: c for c in final["conditions"]}["Failed"]
    assert failed["reason"] == "DataValidationFailed" and "sessions_30d" in failed["message"]
    assert rayjob_names(operator, namespace) == [f"{RUN}-0"]


def test_a_user_error_fails_at_once_with_its_reason_and_no_empty_fields(
    operator: Cluster, namespace: str, tmp_path: Path
) -> None:
    """What KubeRay writes for an entrypoint that exited 4, and the failure.json the run left."""
    from slipway.api.artifacts import FAILURE_FILE, RunFailure

    folder = tmp_path / "runs" / RUN
    folder.mkdir(parents=True)
    failure = RunFailure(
        reason="FeatureServiceNotFound",
        exit_code=4,
        field="spec.features.featureService",
        value="churn_v9",
        detail="no such feature service in the Feast registry (it has: churn_v1)",
        attempt=0,
    )
    (folder / FAILURE_FILE).write_text(failure.model_dump_json(by_alias=True))
    operator.apply(namespace, run_with_artifacts(tmp_path, backoffLimit=2))
    job = f"{RUN}-0"
    wait_for(lambda: job in rayjob_names(operator, namespace), what="the RayJob")  # Pending comes first
    operator.custom.patch_namespaced_custom_object_status(
        "ray.io",
        "v1",
        namespace,
        "rayjobs",
        job,
        {"status": {"jobId": f"{namespace}-{job}-1a2b", "jobStatus": "RUNNING"}},
    )
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 2000  # longer than a condition holds
    message = "Job entrypoint command failed with exit code 4, last available logs (truncated to 20,000 chars):\n"
    finish_job(operator, namespace, job, succeeded=False, message=message + traceback + "FeatureServiceNotFound: ...")
    final = wait_phase(operator, namespace, RUN, "Failed")
    failed = {c["type"]: c for c in final["conditions"]}["Failed"]
    assert failed["reason"] == "FeatureServiceNotFound"
    assert failed["message"] == final["message"]
    assert final["message"].startswith('spec.features.featureService "churn_v9": no such feature service')
    assert f"kubectl -n {namespace} logs job/{job} (Ray job {namespace}-{job}-1a2b)" in final["message"]
    assert rayjob_names(operator, namespace) == [job]  # never retried
    # Nothing written empty: no evaluation, metrics or modelVersion for a run that never trained.
    assert not {"evaluation", "metrics", "modelVersion"} & set(final), final
    assert final["rayJob"]["jobId"] == f"{namespace}-{job}-1a2b" and final["artifacts"].endswith(f"/runs/{RUN}/")
    wait_for(
        lambda: any(
            e.reason == "FeatureServiceNotFound" and e.type == "Warning"
            for e in operator.core.list_namespaced_event(namespace).items
        ),
        what="a FeatureServiceNotFound warning event",
    )


def test_failures_retry_up_to_the_backoff_limit_across_restarts(
    operator: Cluster, namespace: str, tmp_path: Path
) -> None:
    operator.apply(namespace, run_with_artifacts(tmp_path, backoffLimit=2))
    wait_phase(operator, namespace, RUN, "Pending")
    finish_job(operator, namespace, f"{RUN}-0", succeeded=False, message="worker OOMKilled")
    retrying = wait_for(
        lambda: (s := status(operator, namespace, "trainingruns", RUN)).get("attempt") == 1 and s, what="attempt 1"
    )
    assert rayjob_names(operator, namespace) == [f"{RUN}-0", f"{RUN}-1"]
    failed = {c["type"]: c for c in retrying["conditions"]}["Failed"]
    assert (retrying["phase"], failed["status"], failed["reason"]) == ("Pending", "False", "Retrying")
    assert operator.operator is not None
    operator.operator.kill()  # the retry count lives in status, not in the operator
    operator.start_operator()
    finish_job(operator, namespace, f"{RUN}-1", succeeded=False, message="worker OOMKilled")
    wait_for(lambda: status(operator, namespace, "trainingruns", RUN).get("attempt") == 2, timeout=60, what="attempt 2")
    finish_job(operator, namespace, f"{RUN}-2", succeeded=False, message="worker OOMKilled")
    final = wait_phase(operator, namespace, RUN, "Failed")
    failed = {c["type"]: c for c in final["conditions"]}["Failed"]
    assert failed["reason"] == "BackoffLimitExceeded" and "3 attempts failed" in failed["message"]
    assert rayjob_names(operator, namespace) == [f"{RUN}-0", f"{RUN}-1", f"{RUN}-2"]


def test_concurrent_allocations_never_share_a_version(cluster: Cluster, namespace: str) -> None:
    kube = (
        Kube.connect()
        if False
        else Kube(__import__("kubernetes").config.new_client_from_config(str(cluster.kubeconfig)))
    )
    got: list[int] = []
    lock = threading.Lock()

    def allocate() -> None:
        for _ in range(5):
            number = kube.allocate_version(namespace, "churn", floor=0)
            with lock:
                got.append(number)

    threads = [threading.Thread(target=allocate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(1, 21))
    assert kube.allocate_version(namespace, "other", floor=7) == 8  # above versions registered by hand
