"""In the dev stack: each failure the user must fix, through a real RayJob on the local Ray, fails
its TrainingRun at once with its own reason, naming the field, the value and the Ray job.

Real kube-apiserver, operator, Ray with the RayJob executor (KubeRay's stand-in), Feast and the
pipeline. Every case fails before training, so the runs go in together and take about as long as
starting the entrypoint; backoffLimit 2 makes a misclassified failure show as a second RayJob.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pytest
from kubernetes import client

from slipway.devstack.stack import NAMESPACE, DevStack
from tests.e2e.rollouts import finished_runs

pytestmark = pytest.mark.e2e
TIMEOUT = 600  # seconds for every run on a loaded 2-core machine; they take well under a minute


class Case(NamedTuple):
    spec: dict[str, Any]  # merged into the dev stack's TrainingRun spec
    reason: str
    words: list[str]  # in the run's message


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("dev"), with_serving=False) as running:
        yield running


def cases(stack: DevStack) -> dict[str, Case]:
    labels = stack.feast_data / "labels.parquet"
    features = {"featureService": "churn_v1", "entities": {"uri": labels.as_uri()}, "label": "churned"}
    untimed = stack.workdir / "untimed.parquet"
    pd.read_parquet(labels).assign(when="yesterday").to_parquet(untimed)
    (stack.workdir / "plain-file").write_text("not a directory")
    missing = stack.workdir / "nope.parquet"
    return {
        "tr-service": Case(
            {"features": {**features, "featureService": "churn_v9"}},
            "FeatureServiceNotFound",
            ['spec.features.featureService "churn_v9"', "it has: churn_v1"],
        ),
        "tr-dataset": Case(
            {"features": {**features, "entities": {"uri": missing.as_uri()}}},
            "DatasetNotFound",
            [f'spec.features.entities.uri "{missing.as_uri()}": no such file'],
        ),
        "tr-label": Case(
            {"features": {**features, "label": "churn"}},
            "ColumnNotFound",
            ['spec.features.label "churn": not a column', "it has: customer_id, event_timestamp, churned"],
        ),
        "tr-hyperparameter": Case(
            {"hyperparameters": {"learningRate": "fast", "epochs": "1"}},
            "InvalidHyperparameter",
            ['spec.hyperparameters.learningRate "fast": does not parse'],
        ),
        "tr-artifacts": Case(
            {"artifacts": {"uri": (stack.workdir / "plain-file").as_uri() + "/models/"}},
            "ArtifactsUnwritable",
            # No failure.json (nowhere to write it): the job's last log line says why.
            ['spec.artifacts.uri "', "exited with code 8", "cannot be written: NotADirectoryError"],
        ),
        "tr-timestamps": Case(
            {"features": {**features, "entities": {"uri": untimed.as_uri(), "timestampColumn": "when"}}},
            "DataValidationFailed",
            ['spec.features.entities.timestampColumn "when"', "wrong type: when", "validation.json"],
        ),
    }


@pytest.fixture(scope="module")
def runs(stack: DevStack, api: client.CustomObjectsApi) -> dict[str, tuple[Case, dict[str, Any]]]:
    """Applies every case at once and waits until each run has finished."""
    table = cases(stack)
    for name, case in table.items():
        manifest = stack.training_run(name, **case.spec)
        manifest["spec"]["backoffLimit"] = 2  # type: ignore[index]
        api.create_namespaced_custom_object("slipway.dev", "v1alpha1", NAMESPACE, "trainingruns", manifest)

    done = finished_runs(stack, api, len(table), TIMEOUT)
    return {name: (table[name], done[name]) for name in table}


def rayjobs(api: client.CustomObjectsApi, run: str) -> list[dict[str, Any]]:
    items = api.list_namespaced_custom_object("ray.io", "v1", NAMESPACE, "rayjobs")["items"]
    return [i for i in items if i["metadata"]["labels"]["slipway.dev/training-run"] == run]


def empties(value: Any, path: str = "status") -> list[str]:
    if value in ("", {}, []):
        return [path]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in empties(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in empties(v, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize(
    "name", ["tr-service", "tr-dataset", "tr-label", "tr-hyperparameter", "tr-artifacts", "tr-timestamps"]
)
def test_a_user_error_fails_the_run_at_once_with_its_reason(
    name: str, runs: dict[str, tuple[Case, dict[str, Any]]], api: client.CustomObjectsApi, stack: DevStack
) -> None:
    case, status = runs[name]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert (status["phase"], failed["status"], failed["reason"]) == ("Failed", "True", case.reason), status
    message = status["message"]
    print(f"{name}: {failed['reason']}: {message}")
    for word in case.words:
        assert word in message, message
    # One attempt only, and the message says where its logs are: the RayJob's job, the Ray job id.
    [job] = rayjobs(api, name)
    assert status["attempt"] == 0 and job["metadata"]["name"] == f"{name}-0"
    job_id = job["status"]["jobId"]
    assert f"logs job/{name}-0 (Ray job {job_id})" in message and "not retried" in message
    assert "\n" not in message and "Traceback" not in message
    assert job["status"]["jobStatus"] == "FAILED"
    assert empties(status) == [], status  # no status field written empty (evaluation, metrics, ...)
    assert "evaluation" not in status and "modelVersion" not in status
    failure = Path(stack.artifacts) / "runs" / name / "failure.json"
    assert failure.is_file() is (case.reason != "ArtifactsUnwritable")
