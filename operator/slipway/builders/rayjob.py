"""TrainingRun -> KubeRay RayJob (ray.io/v1)."""

from __future__ import annotations

import json
import shlex
from typing import Any

import yaml

from ..api.resources import MANAGED_BY, MODEL_LABEL, RAY_JOBS, TRAINING_RUN_LABEL
from ..api.trainingrun import TrainingRunSpec
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


def run_config(run_name: str, namespace: str, run: TrainingRunSpec, attempt: int) -> str:
    """The whole run, as JSON, for the entrypoint to read from its environment."""
    return json.dumps(
        {"name": run_name, "namespace": namespace, "attempt": attempt, "spec": run.model_dump(by_alias=True)},
        sort_keys=True,
    )


def worker_resources(run: TrainingRunSpec) -> dict[str, dict[str, str]]:
    amounts = {"cpu": cpu_quantity(run.scaling.cpus_per_worker), "memory": run.scaling.memory_per_worker}
    if run.scaling.gpus_per_worker > 0:
        amounts["nvidia.com/gpu"] = str(run.scaling.gpus_per_worker)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def build_rayjob(run_name: str, namespace: str, run: TrainingRunSpec, attempt: int) -> dict[str, Any]:
    """The RayJob for one attempt of a run; the handler adds the owner reference."""
    labels = {**MANAGED_BY, MODEL_LABEL: run.model, TRAINING_RUN_LABEL: run_name}
    # Object-store credentials are referenced, never copied: the values stay in the Secret.
    credentials = (
        {"envFrom": [{"secretRef": {"name": run.artifacts.credentials_secret}}]}
        if run.artifacts.credentials_secret
        else {}
    )
    worker_pod: dict[str, Any] = {
        "containers": [{"name": "ray-worker", "image": run.image, "resources": worker_resources(run), **credentials}]
    }
    if run.scaling.gpus_per_worker > 0:
        worker_pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    runtime_env = {"env_vars": {RUN_CONFIG_ENV: run_config(run_name, namespace, run, attempt)}}
    return {
        "apiVersion": RAY_JOBS.api_version,
        "kind": RAY_JOBS.kind,
        "metadata": {"name": rayjob_name(run_name, attempt), "namespace": namespace, "labels": labels},
        "spec": {
            "entrypoint": entrypoint_command(run),
            "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=True),
            "shutdownAfterJobFinishes": True,
            # Short: a retry must not queue behind idle (GPU) clusters of the attempts before it.
            "ttlSecondsAfterFinished": run.ttl_seconds_after_finished,
            "activeDeadlineSeconds": run.active_deadline_seconds,
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
                                    "image": run.image,
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
                        "replicas": run.scaling.workers,
                        "minReplicas": run.scaling.workers,
                        "maxReplicas": run.scaling.workers,
                        "rayStartParams": {},
                        "template": {"metadata": {"labels": labels}, "spec": worker_pod},
                    }
                ],
            },
        },
    }
