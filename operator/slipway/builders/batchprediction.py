"""BatchPrediction -> KubeRay RayJob (ray.io/v1) running the scoring job, `python -m pipelines.batch`."""

from __future__ import annotations

import json
import shlex
from typing import Any

from ..api.batchprediction import (
    BATCH_CONFIG_ENV,
    BATCH_ENTRYPOINT,
    BatchJobConfig,
    BatchPredictionSpec,
    ResolvedVersion,
)
from ..api.resources import BATCH_PREDICTION_LABEL, MANAGED_BY, MODEL_LABEL
from .rayjob import ray_job, rayjob_name

ENTRYPOINT = shlex.join(["python", "-m", BATCH_ENTRYPOINT])


def batch_config(name: str, namespace: str, spec: BatchPredictionSpec, attempt: int, version: ResolvedVersion) -> str:
    """What the job reads from $SLIPWAY_BATCH_PREDICTION: the prediction and the version it scores with."""
    config = BatchJobConfig(name=name, namespace=namespace, attempt=attempt, spec=spec, model_version=version)
    return json.dumps(config.model_dump(by_alias=True), sort_keys=True)


def build_batch_rayjob(
    name: str, namespace: str, spec: BatchPredictionSpec, attempt: int, version: ResolvedVersion
) -> dict[str, Any]:
    """The RayJob for one attempt of a prediction; the handler adds the owner reference."""
    return ray_job(
        name=rayjob_name(name, attempt),
        namespace=namespace,
        labels={**MANAGED_BY, MODEL_LABEL: spec.model, BATCH_PREDICTION_LABEL: name},
        image=spec.image,
        entrypoint=ENTRYPOINT,
        env={BATCH_CONFIG_ENV: batch_config(name, namespace, spec, attempt, version)},
        scaling=spec.scaling,
        credentials_secret=spec.output.credentials_secret,
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
        active_deadline_seconds=spec.active_deadline_seconds,
    )
