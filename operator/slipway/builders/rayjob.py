"""TrainingRun -> KubeRay RayJob (ray.io/v1), and the RayJob every kind that runs on Ray builds."""

from __future__ import annotations

import json
import shlex
from typing import Any, Protocol

import yaml

from ..api.resources import MANAGED_BY, MODEL_LABEL, RAY_JOBS, TRAINING_RUN_LABEL
from ..api.trainingrun import ServingModel, TrainingRunSpec
from .names import child_name
from .quantities import cpu_quantity

# KubeRay derives cluster and submitter names from the RayJob's and caps RayJob names at 47.
RAYJOB_NAME_LIMIT = 47
RAY_VERSION = "2.60.0"  # the trainer image's Ray (images/trainer)
HEAD_RESOURCES = {"cpu": "1", "memory": "2Gi"}
RUN_CONFIG_ENV = "SLIPWAY_TRAINING_RUN"


def rayjob_name(run_name: str, attempt: int) -> str:
    return child_name(run_name, str(attempt), RAYJOB_NAME_LIMIT)


def entrypoint_command(run: TrainingRunSpec) -> str:
    """`python -m MODULE --hp key=value ...`, each argument shell-quoted."""
    args = ["python", "-m", run.entrypoint]
    for key, value in sorted(run.hyperparameters.items()):
        args += ["--hp", f"{key}={value}"]
    return shlex.join(args)


def run_config(
    run_name: str, namespace: str, run: TrainingRunSpec, attempt: int, serving: ServingModel | None = None
) -> str:
    """The whole run, as JSON, for the entrypoint to read from its environment; `serving` (the
    version mustBeatServing compares with) is scored by the job on the same held-out split."""
    document: dict[str, Any] = {
        "name": run_name,
        "namespace": namespace,
        "attempt": attempt,
        "spec": run.model_dump(by_alias=True),
    }
    if serving is not None:
        document["serving"] = serving.model_dump(by_alias=True)
    return json.dumps(document, sort_keys=True)


class WorkerScaling(Protocol):
    """The Ray workers a job asks for: a TrainingRun's and a BatchPrediction's scaling both are."""

    @property
    def workers(self) -> int: ...
    @property
    def gpus_per_worker(self) -> int: ...
    @property
    def cpus_per_worker(self) -> float: ...
    @property
    def memory_per_worker(self) -> str: ...


def worker_resources(scaling: WorkerScaling) -> dict[str, dict[str, str]]:
    amounts = {"cpu": cpu_quantity(scaling.cpus_per_worker), "memory": scaling.memory_per_worker}
    if scaling.gpus_per_worker > 0:
        amounts["nvidia.com/gpu"] = str(scaling.gpus_per_worker)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def build_rayjob(
    run_name: str, namespace: str, run: TrainingRunSpec, attempt: int, serving: ServingModel | None = None
) -> dict[str, Any]:
    """The RayJob for one attempt of a run; the handler adds the owner reference."""
    return ray_job(
        name=rayjob_name(run_name, attempt),
        namespace=namespace,
        labels={**MANAGED_BY, MODEL_LABEL: run.model, TRAINING_RUN_LABEL: run_name},
        image=run.image,
        entrypoint=entrypoint_command(run),
        env={RUN_CONFIG_ENV: run_config(run_name, namespace, run, attempt, serving)},
        scaling=run.scaling,
        credentials_secret=run.artifacts.credentials_secret,
        ttl_seconds_after_finished=run.ttl_seconds_after_finished,
        active_deadline_seconds=run.active_deadline_seconds,
    )


def ray_job(
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    image: str | None,
    entrypoint: str,
    env: dict[str, str],
    scaling: WorkerScaling,
    credentials_secret: str | None,
    ttl_seconds_after_finished: int,
    active_deadline_seconds: int,
) -> dict[str, Any]:
    """A RayJob: a head and one worker group of `scaling.workers` pods (with GPUs and their
    toleration when asked), `env` in the job's runtime environment; every kind's RayJob is this."""
    # Object-store credentials are referenced, never copied: the values stay in the Secret.
    credentials = {"envFrom": [{"secretRef": {"name": credentials_secret}}]} if credentials_secret else {}
    worker_pod: dict[str, Any] = {
        "containers": [{"name": "ray-worker", "image": image, "resources": worker_resources(scaling), **credentials}]
    }
    if scaling.gpus_per_worker > 0:
        worker_pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    runtime_env = {"env_vars": env}
    return {
        "apiVersion": RAY_JOBS.api_version,
        "kind": RAY_JOBS.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "entrypoint": entrypoint,
            "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=True),
            "shutdownAfterJobFinishes": True,
            # Short: a retry must not queue behind idle (GPU) clusters of the attempts before it.
            "ttlSecondsAfterFinished": ttl_seconds_after_finished,
            "activeDeadlineSeconds": active_deadline_seconds,
            "submissionMode": "K8sJobMode",
            "rayClusterSpec": {
                "rayVersion": RAY_VERSION,
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-head",
                                    "image": image,
                                    "resources": {"requests": HEAD_RESOURCES, "limits": HEAD_RESOURCES},
                                    **credentials,
                                }
                            ]
                        },
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": scaling.workers,
                        "minReplicas": scaling.workers,
                        "maxReplicas": scaling.workers,
                        "rayStartParams": {},
                        "template": {"metadata": {"labels": labels}, "spec": worker_pod},
                    }
                ],
            },
        },
    }
