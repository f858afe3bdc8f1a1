"""TrainingRun -> RayJob, per spec variant."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
import yaml

from slipway.api.trainingrun import TrainingRunSpec
from slipway.builders.rayjob import RAYJOB_NAME_LIMIT, RUN_CONFIG_ENV, build_rayjob, rayjob_name

BASE: dict[str, Any] = {
    "model": "churn",
    "image": "trainer:1",
    "features": {"featureService": "churn_v1", "entities": {"uri": "file:///d/l.parquet"}, "label": "churned"},
    "artifacts": {"uri": "s3://models/churn/"},
}


def spec(**overrides: Any) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate({**BASE, **overrides})


def workers(job: dict[str, Any]) -> dict[str, Any]:
    group: dict[str, Any] = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    return group


@pytest.mark.parametrize(
    ("scaling", "replicas", "requests", "gpu_toleration"),
    [
        ({}, 1, {"cpu": "1", "memory": "4Gi"}, False),
        ({"workers": 2, "cpusPerWorker": 4, "memoryPerWorker": "16Gi"}, 2, {"cpu": "4", "memory": "16Gi"}, False),
        ({"workers": 3, "cpusPerWorker": 0.5}, 3, {"cpu": "500m", "memory": "4Gi"}, False),
        (
            {"workers": 2, "gpusPerWorker": 1, "cpusPerWorker": 4, "memoryPerWorker": "16Gi"},
            2,
            {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
            True,
        ),
    ],
)
def test_worker_group_follows_scaling(
    scaling: dict[str, Any], replicas: int, requests: dict[str, str], gpu_toleration: bool
) -> None:
    job = build_rayjob("run-a", "ml", spec(scaling=scaling), attempt=0)
    group = workers(job)
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (replicas, replicas, replicas)
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": requests, "limits": requests}
    assert ("tolerations" in group["template"]["spec"]) is gpu_toleration


def test_head_has_no_gpu_and_uses_the_trainer_image() -> None:
    job = build_rayjob("run-a", "ml", spec(scaling={"gpusPerWorker": 2}), attempt=0)
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "trainer:1"
    assert "nvidia.com/gpu" not in head["resources"]["limits"]


def test_entrypoint_hyperparameters_and_run_config() -> None:
    run = spec(hyperparameters={"learningRate": "0.001", "epochs": "10", "note": "two words"})
    job = build_rayjob("run-a", "ml", run, attempt=1)
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "pipelines.churn.train"]
    assert argv[3:] == ["--hp", "epochs=10", "--hp", "learningRate=0.001", "--hp", "note=two words"]
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    config = json.loads(env[RUN_CONFIG_ENV])
    assert (config["name"], config["namespace"], config["attempt"]) == ("run-a", "ml", 1)
    assert config["spec"]["features"]["featureService"] == "churn_v1"


def test_lifecycle_fields_and_labels() -> None:
    job = build_rayjob("run-a", "ml", spec(activeDeadlineSeconds=600), attempt=0)
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["metadata"]["labels"]["slipway.dev/model"] == "churn"
    assert job["metadata"]["labels"]["slipway.dev/training-run"] == "run-a"
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")


@pytest.mark.parametrize("run_name", ["short", "x" * 46, "y" * 200])
def test_names_are_deterministic_bounded_and_distinct_per_attempt(run_name: str) -> None:
    first, again, second = rayjob_name(run_name, 0), rayjob_name(run_name, 0), rayjob_name(run_name, 1)
    assert first == again
    assert first != second
    assert len(first) <= RAYJOB_NAME_LIMIT and len(second) <= RAYJOB_NAME_LIMIT
    assert not first.startswith("-") and "--" not in first


def test_long_names_that_share_a_prefix_do_not_collide() -> None:
    assert rayjob_name("a" * 60 + "one", 0) != rayjob_name("a" * 60 + "two", 0)


def test_a_finished_attempt_gives_its_cluster_back_soon() -> None:
    """An hour of idle GPUs per failed attempt made retries queue behind their own clusters."""
    job = build_rayjob("run-a", "ml", spec(), attempt=0)
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert (
        build_rayjob("run-a", "ml", spec(ttlSecondsAfterFinished=0), attempt=0)["spec"]["ttlSecondsAfterFinished"] == 0
    )
