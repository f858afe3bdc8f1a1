"""End to end in the dev stack: a BatchPrediction from `latest` scores a table offline, and every
row agrees with what the served version answers online for the same customer and time.

Real kube-apiserver and operator; the BatchPrediction's RayJob run on the local Ray by the RayJob
executor (`python -m pipelines.batch`: Feast's offline store, Ray Data); the same version served
by a KServe model-server process of our predictor behind the gateway, enriching each request from
Feast's online store. Nothing here is faked.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from kubernetes import client

from slipway.api.batchprediction import PREDICTION_COLUMN, RUN_COLUMN, VERSION_COLUMN
from slipway.devstack.stack import NAMESPACE, DevStack
from tests.e2e.rollouts import GROUP, HOST, VERSION, register, until
from tests.support import wait_for, write_standardized_run

pytestmark = pytest.mark.e2e
TIMEOUT = 600  # seconds for the prediction on a loaded 2-core machine (Ray workers start, Feast joins)
CUSTOMERS = list(range(1001, 1201))  # customers of the generated data, all in the online store


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("dev")) as running:
        yield running


@pytest.fixture(scope="module")
def served(stack: DevStack, api: client.CustomObjectsApi) -> None:
    """Version 1 registered by hand (so it is `latest`) and served with online features."""
    register(api, 1, write_standardized_run(stack.artifacts / "runs" / "churn-batch", stack.feast_data))
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", stack.model_deployment())
    until(api, "version 1 stable", phase="Stable", stableVersion=1)


def entity_table(stack: DevStack, path: Path) -> pd.DataFrame:
    """The customers, each as of a moment at or after the newest feature row of any view.

    The online store answers with each customer's latest materialized row, and the point-in-time
    join at a time after every source row picks that same latest row (every customer's latest
    activity and billing rows are inside the views' TTLs at that time: activity weekly, 30-day TTL;
    billing monthly, 60-day TTL). Earlier times would join older rows than the online store serves,
    and the two answers would rightly differ."""
    newest = max(
        pd.read_parquet(stack.feast_data / f"{view}.parquet", columns=["event_timestamp"])["event_timestamp"].max()
        for view in ("customer_activity", "customer_billing")
    )
    times = [newest + timedelta(seconds=1), newest + timedelta(hours=6)]
    frame = pd.DataFrame(
        {
            "customer_id": [c for c in CUSTOMERS for _ in times],
            "scored_at": [t for _ in CUSTOMERS for t in times],
            "note": [f"row-{i}" for i in range(len(CUSTOMERS) * len(times))],
        }
    )
    frame.to_parquet(path)
    return frame


def batch_prediction(name: str, entities: Path, out: Path) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BatchPrediction",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": "churn",
            "version": "latest",
            "image": "local-dev",  # the dev stack runs the job from this checkout, as TrainingRuns
            "input": {"uri": entities.as_uri(), "timestampColumn": "scored_at"},
            "featureService": "churn_v1",  # a version registered by hand records no lineage
            "output": {"uri": out.as_uri() + "/"},
            "scaling": {"workers": 2, "cpusPerWorker": 0.5, "memoryPerWorker": "1Gi", "batchSize": 64},
            "backoffLimit": 1,
            "activeDeadlineSeconds": 1200,
        },
    }


def online(stack: DevStack, customers: list[int]) -> list[float]:
    """The served version's answers through the gateway, features from the online store."""
    body = json.dumps({"instances": [{"customer_id": c} for c in customers]}).encode()
    request = urllib.request.Request(
        f"{stack.gateway_url}/v1/models/churn:predict", body, {"Host": HOST, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        predictions: list[float] = json.loads(response.read())["predictions"]
    return predictions


@pytest.fixture(scope="module")
def finished(
    stack: DevStack, api: client.CustomObjectsApi, served: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], pd.DataFrame, Path]:
    entities = tmp_path_factory.mktemp("input") / "customers.parquet"
    given = entity_table(stack, entities)
    out = stack.workdir / "predictions" / "churn-scores"
    api.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "batchpredictions", batch_prediction("churn-scores", entities, out)
    )

    def done() -> dict[str, Any] | None:
        if (problem := stack.dead()) is not None:
            raise AssertionError(problem)
        obj = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "batchpredictions", "churn-scores")
        status: dict[str, Any] = obj.get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    return wait_for(done, timeout=TIMEOUT, interval=2, what="the batch prediction to finish"), given, out


def test_a_batch_prediction_from_latest_agrees_with_the_predictor_row_by_row(
    finished: tuple[dict[str, Any], pd.DataFrame, Path], stack: DevStack
) -> None:
    status, given, out = finished
    assert status["phase"] == "Succeeded", status
    assert (status["version"], status["modelVersion"]) == (1, "churn-v1")
    assert status["rowsRead"] == status["rowsWritten"] == len(given)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["rowsWritten"] == len(given) and len(manifest["files"]) >= 1
    got = pd.concat([pd.read_parquet(out / name) for name in manifest["files"]], ignore_index=True)
    got = got.sort_values("note", key=lambda notes: notes.str[4:].astype(int)).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[given.columns], given)
    assert (got[VERSION_COLUMN] == 1).all() and (got[RUN_COLUMN] == "churn-scores").all()

    answers = dict(zip(CUSTOMERS, online(stack, CUSTOMERS), strict=True))
    expected = np.array([answers[c] for c in got["customer_id"]], dtype=np.float32)
    np.testing.assert_allclose(got[PREDICTION_COLUMN].to_numpy(), expected, rtol=0, atol=1e-6)
    assert got[PREDICTION_COLUMN].nunique() > len(CUSTOMERS) // 2  # answers that differ by customer


def test_kubectl_shows_the_batch_prediction(
    finished: tuple[dict[str, Any], pd.DataFrame, Path], stack: DevStack
) -> None:
    kubectl = [str(stack.plane.assets.kubectl), f"--kubeconfig={stack.kubeconfig}"]
    table = subprocess.run([*kubectl, "get", "bp", "-n", NAMESPACE], capture_output=True, text=True, check=True).stdout
    row = next(line.split() for line in table.splitlines() if line.startswith("churn-scores"))
    assert "Succeeded" in row and "churn" in row, table
