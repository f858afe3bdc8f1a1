"""BatchPrediction against the real kube-apiserver: admission, the version resolved once, the
RayJob, and how its end (written as KubeRay writes it, with the files the job leaves) is judged."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway.api.artifacts import RunFailure
from slipway.api.batchprediction import BATCH_CONFIG_ENV, BatchJobConfig, BatchManifest
from tests.integration.test_schema import apply, edit
from tests.support import Cluster, finish_job, wait_for

pytestmark = pytest.mark.integration

GROUP = ("slipway.dev", "v1alpha1")
NAME = "scores"
BP: dict[str, Any] = {
    "apiVersion": "slipway.dev/v1alpha1",
    "kind": "BatchPrediction",
    "metadata": {"name": NAME},
    "spec": {
        "model": "churn",
        "version": "latest",
        "image": "trainer:1",
        "input": {"uri": "file:///data/customers.parquet"},
        "output": {"uri": "file:///tmp/predictions/"},
        "scaling": {"workers": 2, "cpusPerWorker": 1, "memoryPerWorker": "1Gi"},
    },
}


def batch(output: Path, **spec: Any) -> dict[str, Any]:
    bp = copy.deepcopy(BP)
    bp["spec"]["output"]["uri"] = f"file://{output}/"
    bp["spec"].update(spec)
    return bp


def version(number: int, passed: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": f"churn-v{number}"},
        "spec": {
            "model": "churn",
            "version": number,
            "uri": f"s3://models/churn/{number}/",
            "lineage": {"featureService": "churn_v1", "datasetUri": "s3://data/labels.parquet"},
            "gates": {"passed": passed, "metric": "auc", "value": 0.9 if passed else 0.5},
        },
    }


def status(cluster: Cluster, namespace: str, name: str = NAME) -> dict[str, Any]:
    found = cluster.custom.list_namespaced_custom_object(*GROUP, namespace, "batchpredictions")["items"]
    return next((dict(i.get("status") or {}) for i in found if i["metadata"]["name"] == name), {})


def rayjobs(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    items = cluster.custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs")["items"]
    return {i["metadata"]["name"]: i for i in items}


def wait_phase(cluster: Cluster, namespace: str, phase: str, name: str = NAME) -> dict[str, Any]:
    return wait_for(
        lambda: (s := status(cluster, namespace, name)) and s.get("phase") == phase and s,
        timeout=30,
        what=f"{name} {phase}",
    )


def conditions(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in found.get("conditions", [])}


def job_config(job: dict[str, Any]) -> BatchJobConfig:
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    return BatchJobConfig.model_validate(json.loads(env[BATCH_CONFIG_ENV]))


def warned(cluster: Cluster, namespace: str, reason: str) -> bool:
    return any(e.reason == reason and e.type == "Warning" for e in cluster.core.list_namespaced_event(namespace).items)


# -- admission ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("spec.version", 0, ["spec.version", "'latest' or a version number"]),
        ("spec.version", "newest", ["spec.version", "'latest' or a version number"]),
        ("spec.input.uri", "http://data/customers.parquet", ["spec.input.uri", "s3://"]),
        ("spec.output.uri", "/tmp/predictions", ["spec.output.uri", "file://"]),
        ("spec.scaling.workers", 0, ["spec.scaling.workers", "greater than or equal to 1"]),
        ("spec.scaling.memoryPerWorker", "lots", ["spec.scaling.memoryPerWorker", "quantity"]),
        ("spec.model", "Churn", ["spec.model", "DNS-1123 label"]),
        ("spec.input", ..., ["spec.input", "Required value"]),
        ("metadata.name", "scores.v2", ["metadata.name", "DNS-1035 label"]),
    ],
)
def test_bad_input_is_refused_at_apply_naming_the_field(
    cluster: Cluster, namespace: str, path: str, value: Any, words: list[str]
) -> None:
    code, output = apply(cluster, namespace, edit(BP, path, value), dry_run=True)
    assert code != 0, output
    for word in words:
        assert word in output, output


def test_defaults_and_an_immutable_spec(cluster: Cluster, namespace: str) -> None:
    minimal = edit(edit(BP, "spec.version", ...), "spec.scaling", ...)
    code, output = apply(cluster, namespace, minimal)
    assert code == 0, output
    stored = cluster.custom.get_namespaced_custom_object(*GROUP, namespace, "batchpredictions", NAME)["spec"]
    assert stored["version"] == "latest" and stored["input"]["timestampColumn"] == "event_timestamp"
    assert stored["scaling"] == {
        "workers": 2,
        "gpusPerWorker": 0,
        "cpusPerWorker": 1,
        "memoryPerWorker": "4Gi",
        "batchSize": 4096,
    }
    assert (stored["backoffLimit"], stored["activeDeadlineSeconds"]) == (2, 3600)
    code, output = apply(cluster, namespace, edit(minimal, "spec.version", 3))
    assert code != 0 and "spec is immutable" in output, output
    for number in (3, "3"):
        code, output = apply(cluster, namespace, edit(BP, "metadata.name", f"pinned-{number}-{type(number).__name__}"))
        assert code == 0, output


# -- the operator ---------------------------------------------------------------------------------


def test_a_version_that_does_not_exist_makes_no_rayjob_until_it_is_registered(
    operator: Cluster, namespace: str, tmp_path: Path
) -> None:
    operator.apply(namespace, version(1), batch(tmp_path, version=2))
    waiting = wait_for(
        lambda: (s := status(operator, namespace)) and "VersionResolved" in conditions(s) and s,
        what="VersionResolved=False",
    )
    resolved = conditions(waiting)["VersionResolved"]
    assert (waiting["phase"], resolved["status"], resolved["reason"]) == ("Pending", "False", "ModelVersionNotFound")
    assert resolved["message"].startswith('spec.version "2": ModelVersion 2 of model churn does not exist')
    assert "churn-v1 (1)" in resolved["message"] and waiting["message"] == resolved["message"]
    assert not {"version", "modelVersion", "rayJob", "completionTime"} & set(waiting), waiting
    wait_for(lambda: warned(operator, namespace, "ModelVersionNotFound"), what="a ModelVersionNotFound event")
    assert rayjobs(operator, namespace) == {}
    operator.apply(namespace, version(2))  # registered later: the prediction starts by itself
    wait_for(lambda: f"{NAME}-0" in rayjobs(operator, namespace), what="the RayJob once version 2 exists")
    started = status(operator, namespace)
    assert (started["version"], started["modelVersion"]) == (2, "churn-v2")
    assert conditions(started)["VersionResolved"]["status"] == "True"


def test_latest_is_resolved_once_recorded_and_scored_to_the_end(
    operator: Cluster, namespace: str, tmp_path: Path
) -> None:
    operator.apply(namespace, version(1), version(2, passed=False), batch(tmp_path))
    job = wait_for(lambda: rayjobs(operator, namespace).get(f"{NAME}-0"), what="the RayJob")
    pending = wait_phase(operator, namespace, "Pending")
    assert (pending["version"], pending["modelVersion"]) == (1, "churn-v1")  # v2 failed its gates
    assert pending["lineage"]["featureService"] == "churn_v1" and pending["rayJob"]["name"] == f"{NAME}-0"
    config = job_config(job)
    assert (config.model_version.name, config.model_version.version) == ("churn-v1", 1)
    assert (config.model_version.uri, config.model_version.feature_service) == ("s3://models/churn/1/", "churn_v1")
    assert (config.name, config.namespace, config.attempt) == (NAME, namespace, 0)
    assert job["spec"]["entrypoint"] == "python -m pipelines.batch"
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("BatchPrediction", NAME, True)
    # A newer version registered while the prediction runs changes nothing.
    operator.apply(namespace, version(3))
    operator.custom.patch_namespaced_custom_object_status(
        "ray.io", "v1", namespace, "rayjobs", f"{NAME}-0", {"status": {"jobId": "j-1", "jobStatus": "RUNNING"}}
    )
    running = wait_phase(operator, namespace, "Running")
    assert running["modelVersion"] == "churn-v1" and job_config(rayjobs(operator, namespace)[f"{NAME}-0"]) == config
    # What the job leaves when it is done, then what KubeRay writes.
    manifest = BatchManifest(
        batch_prediction=NAME,
        attempt=0,
        model="churn",
        version=1,
        model_version="churn-v1",
        feature_service="churn_v1",
        input="file:///data/customers.parquet",
        rows_read=2000,
        rows_written=2000,
        seconds=8.0,
        files=["part-00000.parquet"],
    )
    (tmp_path / "manifest.json").write_text(manifest.model_dump_json(by_alias=True))
    finish_job(operator, namespace, f"{NAME}-0", succeeded=True)
    done = wait_phase(operator, namespace, "Succeeded")
    assert (done["rowsRead"], done["rowsWritten"], done["throughput"]) == (2000, 2000, 250)
    assert done["output"] == f"file://{tmp_path}/" and done["completionTime"] == "2026-11-22T10:00:00Z"
    assert (done["version"], done["modelVersion"], done["lineage"]["featureService"]) == (1, "churn-v1", "churn_v1")
    complete = conditions(done)["Complete"]
    assert (complete["status"], complete["reason"]) == ("True", "PredictionsWritten")
    assert "wrote 2000 predictions" in done["message"]
    assert list(rayjobs(operator, namespace)) == [f"{NAME}-0"]
    wait_for(
        lambda: any(e.reason == "PredictionsWritten" for e in operator.core.list_namespaced_event(namespace).items),
        what="a PredictionsWritten event",
    )
    # The printer columns, and the category.
    table = operator.kubectl("get", "bp", "-n", namespace)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "MODEL", "VERSION", "PHASE", "ROWS", "ROWS/S", "WORKERS", "AGE"]
    assert row.split()[:7] == [NAME, "churn", "1", "Succeeded", "2000", "250", "2"]
    wide = operator.kubectl("get", "bp", NAME, "-n", namespace, "-o", "wide")
    assert f"file://{tmp_path}/" in wide.stdout and "wrote 2000 predictions" in wide.stdout
    listed = operator.kubectl("get", "slipway", "-n", namespace, "-o", "name")
    assert f"batchprediction.slipway.dev/{NAME}" in listed.stdout.split(), listed.stdout + listed.stderr


def test_a_user_error_fails_at_once_naming_the_field(operator: Cluster, namespace: str, tmp_path: Path) -> None:
    operator.apply(namespace, version(1), batch(tmp_path, backoffLimit=2))
    wait_for(lambda: f"{NAME}-0" in rayjobs(operator, namespace), what="the RayJob")  # Pending comes first
    failure = RunFailure(
        reason="DatasetNotFound",
        exit_code=5,
        field="spec.input.uri",
        value="file:///data/customers.parquet",
        detail="no such file",
        attempt=0,
    )
    (tmp_path / "failure.json").write_text(failure.model_dump_json(by_alias=True))
    message = "Job entrypoint command failed with exit code 5, last available logs (truncated to 20,000 chars):\n"
    finish_job(operator, namespace, f"{NAME}-0", succeeded=False, message=message + "DatasetNotFound: ...")
    final = wait_phase(operator, namespace, "Failed")
    failed = conditions(final)["Failed"]
    assert failed["reason"] == "DatasetNotFound" and failed["message"] == final["message"]
    assert final["message"].startswith('spec.input.uri "file:///data/customers.parquet": no such file; not retried')
    assert f"kubectl -n {namespace} logs job/{NAME}-0" in final["message"]
    assert list(rayjobs(operator, namespace)) == [f"{NAME}-0"]  # never retried
    assert not {"rowsRead", "rowsWritten", "output", "throughput"} & set(final), final
    wait_for(lambda: warned(operator, namespace, "DatasetNotFound"), what="a DatasetNotFound warning")


def test_an_unwritable_output_is_told_by_the_exit_code_alone(operator: Cluster, namespace: str, tmp_path: Path) -> None:
    operator.apply(namespace, version(1), batch(tmp_path / "nowhere"))
    wait_for(lambda: f"{NAME}-0" in rayjobs(operator, namespace), what="the RayJob")  # Pending comes first
    message = "Job entrypoint command failed with exit code 8, last available logs (truncated to 20,000 chars):\nx"
    finish_job(operator, namespace, f"{NAME}-0", succeeded=False, message=message)
    final = wait_phase(operator, namespace, "Failed")
    assert conditions(final)["Failed"]["reason"] == "OutputUnwritable"
    assert final["message"].startswith(f'spec.output.uri "file://{tmp_path}/nowhere/": the job cannot write there')


def test_an_infrastructure_failure_is_retried_with_a_new_rayjob_up_to_the_limit(
    operator: Cluster, namespace: str, tmp_path: Path
) -> None:
    operator.apply(namespace, version(1), batch(tmp_path, backoffLimit=1))
    wait_for(lambda: f"{NAME}-0" in rayjobs(operator, namespace), what="the RayJob")  # Pending comes first
    stale = RunFailure(reason="ColumnNotFound", exit_code=6, field="f", value="v", detail="d", attempt=7)
    (tmp_path / "failure.json").write_text(stale.model_dump_json(by_alias=True))  # another attempt's: ignored
    finish_job(operator, namespace, f"{NAME}-0", succeeded=False, message="worker OOMKilled")
    retrying = wait_for(lambda: (s := status(operator, namespace)).get("attempt") == 1 and s, what="attempt 1")
    assert retrying["phase"] == "Pending" and conditions(retrying)["Failed"]["reason"] == "Retrying"
    jobs = rayjobs(operator, namespace)
    assert sorted(jobs) == [f"{NAME}-0", f"{NAME}-1"]
    assert job_config(jobs[f"{NAME}-1"]).attempt == 1 and job_config(jobs[f"{NAME}-1"]).model_version.name == "churn-v1"
    finish_job(operator, namespace, f"{NAME}-1", succeeded=False, message="worker OOMKilled")
    final = wait_phase(operator, namespace, "Failed")
    failed = conditions(final)["Failed"]
    assert failed["reason"] == "BackoffLimitExceeded" and "2 attempts failed" in failed["message"]
    assert sorted(rayjobs(operator, namespace)) == [f"{NAME}-0", f"{NAME}-1"]
