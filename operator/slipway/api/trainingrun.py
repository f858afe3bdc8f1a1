"""TrainingRun: one training job on Feast features, run by Ray Train through a KubeRay RayJob."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import (
    ARTIFACT_SCHEMES,
    SECRET_NAME,
    ApiModel,
    Condition,
    StatusModel,
    cel,
    conditions_field,
    dns_label_rule,
    quantity_rule,
    rule,
    uri_rule,
)
from .modelversion import Lineage

TrainingPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
EvaluationMetric = Literal["auc", "accuracy", "logLoss"]


class EntityDataset(ApiModel):
    uri: str = Field(
        description="Parquet file of entity keys, event timestamps and labels (s3://, gs://, file://, pvc://).",
        max_length=2048,
        json_schema_extra=uri_rule("spec.features.entities.uri", ARTIFACT_SCHEMES),
    )
    timestamp_column: str = Field(
        "event_timestamp",
        description="Column holding each row's event time, for point-in-time-correct joins.",
        min_length=1,
        max_length=128,
    )


class Features(ApiModel):
    feature_service: str = Field(
        description="Feast feature service the model is trained on (e.g. churn_v1).",
        min_length=1,
        max_length=128,
    )
    entities: EntityDataset = Field(description="The entity and label dataset.")
    label: str = Field(description="Label column in the entity dataset.", min_length=1, max_length=128)


class DataValidation(ApiModel):
    max_missing_fraction: float = Field(
        0.01, ge=0, le=1, description="Largest fraction of missing values allowed per feature (0..1)."
    )
    max_drift: float = Field(
        0.2,
        ge=0,
        description="Largest population stability index per feature against the last accepted dataset.",
    )


class Scaling(ApiModel):
    workers: int = Field(1, ge=1, le=512, description="Ray Train workers, one pod each.")
    gpus_per_worker: int = Field(0, ge=0, le=16, description="GPUs (nvidia.com/gpu) per worker; 0 trains on CPU.")
    cpus_per_worker: float = Field(1, gt=0, le=256, description="CPUs per worker.")
    memory_per_worker: str = Field(
        "4Gi",
        description="Memory per worker, a Kubernetes quantity (e.g. 16Gi).",
        max_length=32,
        json_schema_extra=quantity_rule("spec.scaling.memoryPerWorker"),
    )


class Artifacts(ApiModel):
    uri: str = Field(
        description="Where model artifacts are written (s3://, gs://, file:// or pvc://).",
        max_length=2048,
        json_schema_extra=uri_rule("spec.artifacts.uri", ARTIFACT_SCHEMES),
    )
    credentials_secret: str | None = Field(
        None,
        description="A Secret in the run's namespace whose keys become environment variables of the Ray head "
        "and workers, e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL for s3://. Credentials "
        "are only ever referenced, never written in a spec.",
        max_length=253,
        pattern=SECRET_NAME,
    )


class Evaluation(ApiModel):
    """The gate a trained model must pass before it becomes a servable ModelVersion."""

    model_config = cel(
        rule(
            "self.metric == 'logLoss' ? !has(self.minimum) : !has(self.maximum)",
            "spec.evaluation: use maximum with logLoss (lower is better) and minimum with auc or accuracy",
        )
    )

    metric: EvaluationMetric = Field("auc", description="Held-out metric the gate reads: auc, accuracy or logLoss.")
    minimum: float | None = Field(None, ge=0, le=1, description="Lowest acceptable value (auc, accuracy).")
    maximum: float | None = Field(None, ge=0, description="Highest acceptable value (logLoss).")
    must_beat_serving: bool = Field(
        False, description="Also require beating the version the ModelDeployment of this model serves."
    )


class TrainingRunTemplate(ApiModel):
    """What to train, on which features, with which resources, and the gate it must pass."""

    model: str = Field(
        description="Model name (a DNS-1123 label); the registry key shared by ModelVersions and ModelDeployments.",
        max_length=63,
        json_schema_extra=dns_label_rule("spec.model"),
    )
    image: str | None = Field(
        None,
        description="Trainer container image; unset: the operator's default (chart value images.trainer).",
        min_length=1,
        max_length=512,
    )
    entrypoint: str = Field(
        "pipelines.churn.train",
        description="Python module the RayJob runs (python -m ENTRYPOINT).",
        max_length=256,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
    )
    features: Features = Field(description="Feast features and the entity/label dataset.")
    data_validation: DataValidation = Field(
        default_factory=DataValidation, description="Checks run on the training data before training."
    )
    hyperparameters: dict[str, str] = Field(
        default_factory=dict, description="Passed to the entrypoint as --hp KEY=VALUE.", max_length=64
    )
    scaling: Scaling = Field(
        default_factory=Scaling, description="Ray Train scaling: workers and resources per worker."
    )
    artifacts: Artifacts = Field(description="Where the model, metrics and lineage are written.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="The evaluation gate.")
    backoff_limit: int = Field(2, ge=0, le=100, description="Retries after a failed attempt.")
    active_deadline_seconds: int = Field(
        7200,
        ge=1,
        le=2**31 - 1,  # the RayJob's field is an int32: a larger one was accepted here, refused there
        description="Deadline for one attempt, in seconds; the RayJob is stopped after it.",
    )
    ttl_seconds_after_finished: int = Field(
        60,
        ge=0,
        le=86400,
        description="Seconds an attempt's RayCluster (and its GPUs) outlives the attempt, for a look at "
        "its dashboard; KubeRay keeps the submitter Job, with the job's logs, either way.",
    )


class TrainingRunSpec(TrainingRunTemplate):
    """What to train, on which features, with which resources, and the gate it must pass."""

    model_config = cel(rule("self == oldSelf", "spec is immutable: create a new TrainingRun instead"))


class RayJobRef(StatusModel):
    name: str = Field(description="Name of the RayJob of the current attempt.")
    job_id: str | None = Field(
        None, description="The RayJob's status.jobId: the Ray job's submission id (its logs: `ray job logs`)."
    )
    job_status: str | None = Field(None, description="The RayJob's status.jobStatus.")
    job_deployment_status: str | None = Field(None, description="The RayJob's status.jobDeploymentStatus.")


class EvaluationResult(StatusModel):
    metric: str = Field(description="The gate's metric.")
    value: float | None = Field(None, description="The metric's value on the held-out split.")
    passed: bool | None = Field(None, description="Whether the gate passed.")
    serving_version: int | None = Field(
        None, description="The serving version the new model was compared with (enforced by mustBeatServing)."
    )
    serving_value: float | None = Field(None, description="That version's value of the metric.")
    compared_on: Literal["thisRunsData", "recordedMetric"] | None = Field(
        None,
        description="thisRunsData: the serving model was scored on this run's held-out split; recordedMetric: "
        "it could not be, so its ModelVersion's recorded metric (from its own, older data) was used.",
    )


class ServingModel(StatusModel):
    """The version a run's mustBeatServing compares with, fixed when the run is first submitted."""

    version: int = Field(description="The ModelVersion's number.")
    uri: str = Field(description="Its artifact directory, which the job loads to score on its held-out split.")


# Fields that have no value yet are left out (None), never written as "" or {}: the schema
# gives them no defaults, so the API server does not fill them in either.
class TrainingRunStatus(StatusModel):
    phase: TrainingPhase = Field("Pending", description="Pending, Running, Succeeded or Failed.")
    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] = conditions_field()
    ray_job: RayJobRef | None = Field(None, description="The RayJob of the current attempt.")
    attempt: int = Field(0, description="Current attempt, from 0; retries count against spec.backoffLimit.")
    start_time: str | None = Field(None, description="When the current attempt started (RFC 3339).")
    completion_time: str | None = Field(None, description="When the run finished (RFC 3339).")
    message: str | None = Field(
        None, description="One line: what the run is doing, or why it failed and where the job's logs are."
    )
    metrics: dict[str, str] | None = Field(None, description="Final held-out metrics.")
    evaluation: EvaluationResult | None = Field(
        None, description="The evaluation gate's verdict, once the job succeeded."
    )
    model_version: str | None = Field(None, description="The ModelVersion this run produced.")
    artifacts: str | None = Field(
        None, description="Where this run's model, manifest, validation report and failure file are."
    )
    lineage: Lineage | None = Field(None, description="Feature service and views, dataset, image, versions.")
    serving_model: ServingModel | None = Field(
        None,
        description="The version that served when the run was submitted: the job scores it on the same "
        "held-out split as the new model, for evaluation.mustBeatServing (and shown in status.evaluation).",
    )
