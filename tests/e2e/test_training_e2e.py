"""End to end in the dev stack: a TrainingRun trains for real (Feast, Ray Train) and is registered.

Real kube-apiserver, operator, Ray with the RayJob executor, Feast's file offline store and the
pipeline; nothing here is faked. The three runs go in together and share the local Ray.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kubernetes import client

from slipway.devstack.stack import NAMESPACE, DevStack
from tests.e2e.rollouts import finished_runs

pytestmark = pytest.mark.e2e
TIMEOUT = 600  # seconds for a run on a loaded 2-core machine; runs take about a minute


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("dev")) as running:
        yield running


@pytest.fixture(scope="module")
def runs(
    stack: DevStack, api: client.CustomObjectsApi, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """Applies the three runs at once and waits until each has finished."""
    unknown = tmp_path_factory.mktemp("unknown") / "labels.parquet"
    labels = pd.read_parquet(stack.feast_data / "labels.parquet")
    labels.loc[labels.sample(frac=0.3, random_state=1).index, "customer_id"] += 10_000_000  # not in the store
    labels.to_parquet(unknown)
    manifests = [
        stack.training_run("churn-good"),
        stack.training_run("churn-bad-data", labels=unknown),
        stack.training_run("churn-low-bar", evaluation={"metric": "auc", "minimum": 0.999}),
    ]
    for manifest in manifests:
        api.create_namespaced_custom_object("slipway.dev", "v1alpha1", NAMESPACE, "trainingruns", manifest)

    return finished_runs(stack, api, len(manifests), TIMEOUT)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def versions(api: client.CustomObjectsApi) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.list_namespaced_custom_object(
        "slipway.dev", "v1alpha1", NAMESPACE, "modelversions"
    )["items"]
    return items


def test_a_run_trains_on_feast_features_and_registers_a_model_version(
    runs: dict[str, dict[str, Any]], api: client.CustomObjectsApi
) -> None:
    status = runs["churn-good"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert float(status["metrics"]["auc"]) > 0.7, status["metrics"]  # the label is learnable
    assert condition(status, "GatesPassed")["status"] == "True"
    mv = next(v for v in versions(api) if v["spec"]["trainingRun"] == "churn-good")
    assert mv["metadata"]["name"] == status["modelVersion"] == "churn-v1"
    assert float(mv["spec"]["metrics"]["auc"]) > 0.7
    lineage = mv["spec"]["lineage"]
    assert lineage["featureService"] == "churn_v1"
    assert {"customer_activity", "customer_billing"} <= set(lineage["featureViews"])
    assert len(lineage["datasetSha256"]) == 64
    assert lineage["rayVersion"] and lineage["torchVersion"]
    model_dir = Path(mv["spec"]["uri"].removeprefix("file://"))
    assert (model_dir / "model.pt").is_file() and (model_dir / "manifest.json").is_file()


def test_too_many_missing_values_fail_with_the_data_validation_reason(runs: dict[str, dict[str, Any]]) -> None:
    status = runs["churn-bad-data"]
    failed = condition(status, "Failed")
    assert (status["phase"], failed["reason"]) == ("Failed", "DataValidationFailed")
    assert "sessions_30d" in failed["message"], failed["message"]  # the reason names the features


def test_a_run_below_the_gate_registers_nothing(runs: dict[str, dict[str, Any]], api: client.CustomObjectsApi) -> None:
    status = runs["churn-low-bar"]
    failed = condition(status, "Failed")
    assert (status["phase"], failed["reason"]) == ("Failed", "GateFailed")
    assert status["evaluation"]["passed"] is False
    assert [v["spec"]["trainingRun"] for v in versions(api)] == ["churn-good"]


def test_kubectl_shows_the_run_and_its_version(runs: dict[str, dict[str, Any]], stack: DevStack) -> None:
    kubectl = [str(stack.plane.assets.kubectl), f"--kubeconfig={stack.kubeconfig}"]
    table = subprocess.run(
        [*kubectl, "get", "tr,mv", "-n", NAMESPACE], capture_output=True, text=True, check=True
    ).stdout
    row = next(line.split() for line in table.splitlines() if line.startswith("trainingrun.slipway.dev/churn-good"))
    assert row[1:3] == ["churn", "Succeeded"] and row[6] == "churn-v1"  # MODEL PHASE ... VERSION
    assert float(row[5]) > 0.7  # METRIC: the gate's auc
    mv_row = next(line.split() for line in table.splitlines() if line.startswith("modelversion.slipway.dev/churn-v1"))
    assert mv_row[4] == "true"  # GATES
