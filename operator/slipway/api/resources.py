"""Every kind the operator reads or writes, as (group, version, plural), plus the labels it sets."""

from __future__ import annotations

from typing import NamedTuple

from .. import GROUP, VERSION


class Resource(NamedTuple):
    group: str
    version: str
    plural: str
    kind: str

    @property
    def ref(self) -> tuple[str, str, str]:
        """(group, version, plural), as Kopf's decorators take it."""
        return self.group, self.version, self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


TRAINING_RUNS = Resource(GROUP, VERSION, "trainingruns", "TrainingRun")
MODEL_VERSIONS = Resource(GROUP, VERSION, "modelversions", "ModelVersion")
MODEL_DEPLOYMENTS = Resource(GROUP, VERSION, "modeldeployments", "ModelDeployment")
TRAINING_SCHEDULES = Resource(GROUP, VERSION, "trainingschedules", "TrainingSchedule")
BATCH_PREDICTIONS = Resource(GROUP, VERSION, "batchpredictions", "BatchPrediction")
RAY_JOBS = Resource("ray.io", "v1", "rayjobs", "RayJob")
INFERENCE_SERVICES = Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")

MODEL_LABEL = f"{GROUP}/model"
TRAINING_RUN_LABEL = f"{GROUP}/training-run"
DEPLOYMENT_LABEL = f"{GROUP}/deployment"
VERSION_LABEL = f"{GROUP}/version"
BATCH_PREDICTION_LABEL = f"{GROUP}/batch-prediction"  # on each RayJob of a BatchPrediction
SCHEDULE_LABEL = f"{GROUP}/training-schedule"  # on each TrainingRun a TrainingSchedule made
TRIGGER_LABEL = f"{GROUP}/trigger"  # cron, drift or manual
TRIGGER_VALUE_ANNOTATION = f"{GROUP}/trigger-value"
MANAGED_BY = {"app.kubernetes.io/managed-by": "slipway"}
# `kubectl slipway` asks the rollout engine through these annotations: promote, abort and retry
# hold a request id (a new id is a new request), paused holds "true".
ROLLOUT_REQUEST_PREFIX = f"rollout.{GROUP}/"
ROLLOUT_VERBS = ("promote", "abort", "retry")
PAUSED_ANNOTATION = f"{ROLLOUT_REQUEST_PREFIX}paused"
# `kubectl slipway retrain` asks a TrainingSchedule for a run: the annotation holds a request id,
# and a new id is a new request (the schedule's status records the last one consumed).
RETRAIN_ANNOTATION = f"schedule.{GROUP}/retrain"
