"""On kind: a TrainingRun trains on KubeRay (a Ray head and two workers running the trainer image)
on Feast features, and registers a ModelVersion whose artifacts the model servers can load.

The run is the session's `first_version` (conftest.py), which the serving scenarios deploy.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.kind.cluster import DATA, LABELS, TRAINER_IMAGE, Kind, Trained

pytestmark = [pytest.mark.kind, pytest.mark.timeout(2400)]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_a_training_run_trains_on_kuberay_and_registers_a_model_version(kind: Kind, first_version: Trained) -> None:
    namespace, status, version = first_version.namespace, first_version.run["status"], first_version.version
    assert status["phase"] == "Succeeded", status.get("message")
    assert float(status["metrics"]["auc"]) > 0.7, status["metrics"]  # the generated label is learnable
    assert condition(status, "GatesPassed")["status"] == "True"

    assert version["metadata"]["name"] == status["modelVersion"] == "churn-v1"
    assert version["spec"]["uri"] == f"file://{DATA}/models/{namespace}/runs/churn-1/"
    assert float(version["spec"]["metrics"]["auc"]) > 0.7
    lineage = version["spec"]["lineage"]
    assert lineage["featureService"] == "churn_v1"
    assert {"customer_activity", "customer_billing"} <= set(lineage["featureViews"])
    assert lineage["datasetUri"] == LABELS and len(lineage["datasetSha256"]) == 64
    assert lineage["image"] == TRAINER_IMAGE and lineage["rayVersion"] and lineage["torchVersion"]

    # It ran on KubeRay: the run's RayJob succeeded, and belongs to the run.
    job = kind.custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", status["rayJob"]["name"])
    assert job["status"]["jobStatus"] == "SUCCEEDED", job["status"]
    assert [(o["kind"], o["name"]) for o in job["metadata"]["ownerReferences"]] == [("TrainingRun", "churn-1")]
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2

    # What an ML engineer sees.
    table = kind.kubectl("get", "trainingruns,modelversions", "-n", namespace)
    run_row = next(line.split() for line in table.splitlines() if line.startswith("trainingrun.slipway.dev/churn-1 "))
    assert "Succeeded" in run_row and "churn-v1" in run_row, table
    version_row = next(
        line.split() for line in table.splitlines() if line.startswith("modelversion.slipway.dev/churn-v1 ")
    )
    assert "true" in version_row, table  # GATES
