"""BatchPrediction: score a whole entity dataset with a registered ModelVersion (offline inference).

The operator runs it as a KubeRay RayJob whose entrypoint (`python -m pipelines.batch`) joins the
version's Feast features point in time, scores with Ray Data and writes partitioned parquet.
"""

from __future__ import annotations

from pydantic import Field

from .artifacts import (
    EXIT_ARTIFACTS_UNWRITABLE,
    EXIT_COLUMN_NOT_FOUND,
    EXIT_CONFIG,
    EXIT_DATASET_NOT_FOUND,
    EXIT_FEATURE_SERVICE_NOT_FOUND,
    FAILURE_REASONS,
)
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
    version_rule,
)
from .modelversion import Lineage
from .trainingrun import RayJobRef, TrainingPhase


class BatchInput(ApiModel):
    uri: str = Field(
        description="Parquet file of entity keys and event timestamps to score (s3://, gs://, file://, pvc://).",
        max_length=2048,
        json_schema_extra=uri_rule("spec.input.uri", ARTIFACT_SCHEMES),
    )
    timestamp_column: str = Field(
        "event_timestamp",
        description="Column holding each row's event time: features are joined as of that time, as in training.",
        min_length=1,
        max_length=128,
    )


class BatchOutput(ApiModel):
    uri: str = Field(
        description="Directory the predictions are written to as parquet files, with manifest.json beside them "
        "(s3://, gs://, file://, pvc://).",
        max_length=2048,
        json_schema_extra=uri_rule("spec.output.uri", ARTIFACT_SCHEMES),
    )
    credentials_secret: str | None = Field(
        None,
        description="A Secret whose keys become environment variables of the Ray head and workers (object-store "
        "credentials for the input, the model and the output). Only ever referenced, never copied.",
        max_length=253,
        pattern=SECRET_NAME,
    )


class BatchScaling(ApiModel):
    workers: int = Field(2, ge=1, le=512, description="Ray workers scoring in parallel, one pod each.")
    gpus_per_worker: int = Field(0, ge=0, le=16, description="GPUs (nvidia.com/gpu) per worker; 0 scores on CPU.")
    cpus_per_worker: float = Field(1, gt=0, le=256, description="CPUs per worker.")
    memory_per_worker: str = Field(
        "4Gi",
        description="Memory per worker, a Kubernetes quantity (e.g. 16Gi).",
        max_length=32,
        json_schema_extra=quantity_rule("spec.scaling.memoryPerWorker"),
    )
    batch_size: int = Field(4096, ge=1, le=1_000_000, description="Rows per batch handed to the model.")


class BatchPredictionSpec(ApiModel):
    """Which version scores which entities, with which features, and where the predictions go."""

    model_config = cel(rule("self == oldSelf", "spec is immutable: create a new BatchPrediction instead"))

    model: str = Field(
        description="Model name (a DNS-1123 label) whose ModelVersions are looked up.",
        max_length=63,
        json_schema_extra=dns_label_rule("spec.model"),
    )
    version: int | str = Field(
        "latest",
        description="A version number, or 'latest' (the newest version that passed its gates), resolved once "
        "when the prediction starts and recorded in status.version.",
        json_schema_extra=version_rule(),
    )
    image: str | None = Field(
        None,
        description="Container image of the job; unset: the operator's default trainer image "
        "(chart value images.trainer), which holds the scoring pipeline.",
        min_length=1,
        max_length=512,
    )
    input: BatchInput = Field(description="The entities to score, with the time to score each one as of.")
    feature_service: str | None = Field(
        None,
        description="Feast feature service for the point-in-time join; unset: the one the version was trained "
        "on (its lineage), which is what the model expects.",
        min_length=1,
        max_length=128,
    )
    output: BatchOutput = Field(description="Where the predictions are written.")
    scaling: BatchScaling = Field(default_factory=BatchScaling, description="Ray workers and their resources.")
    backoff_limit: int = Field(2, ge=0, le=100, description="Retries after an infrastructure failure.")
    active_deadline_seconds: int = Field(
        3600, ge=1, le=2**31 - 1, description="Deadline for one attempt, in seconds; the RayJob is stopped after it."
    )
    ttl_seconds_after_finished: int = Field(
        60, ge=0, le=86400, description="Seconds an attempt's RayCluster outlives the attempt."
    )


class BatchPredictionStatus(StatusModel):
    phase: TrainingPhase = Field("Pending", description="Pending, Running, Succeeded or Failed.")
    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] = conditions_field()
    ray_job: RayJobRef | None = Field(None, description="The RayJob of the current attempt.")
    attempt: int = Field(0, description="Current attempt, from 0; retries count against spec.backoffLimit.")
    start_time: str | None = Field(None, description="When the current attempt started (RFC 3339).")
    completion_time: str | None = Field(None, description="When the prediction finished (RFC 3339).")
    message: str | None = Field(None, description="One line: what the job is doing, or why it failed.")
    version: int | None = Field(None, description="The version used ('latest' resolved once, at the start).")
    model_version: str | None = Field(None, description="The ModelVersion used.")
    rows_read: int | None = Field(None, description="Entity rows read from spec.input.")
    rows_written: int | None = Field(None, description="Prediction rows written to spec.output.")
    output: str | None = Field(None, description="Where the predictions and their manifest.json are.")
    throughput: float | None = Field(None, description="Rows scored per second, join included.")
    lineage: Lineage | None = Field(None, description="The version's lineage: its run, features and dataset.")


# -- the contract between the operator and the scoring job (pipelines/batch) -------------------
BATCH_CONFIG_ENV = "SLIPWAY_BATCH_PREDICTION"  # JSON: BatchJobConfig, in the RayJob's runtime env
BATCH_ENTRYPOINT = "pipelines.batch"  # python -m BATCH_ENTRYPOINT
BATCH_MANIFEST_FILE = "manifest.json"  # in spec.output.uri, beside the parquet files
BATCH_FAILURE_FILE = "failure.json"  # in spec.output.uri when it is writable (api.artifacts.RunFailure)
PREDICTION_COLUMN = "prediction"  # the model's probability, as the predictor answers it
VERSION_COLUMN = "model_version"  # the version number, in every row
RUN_COLUMN = "batch_prediction"  # the BatchPrediction's name, in every row
OUTPUT_UNWRITABLE = "OutputUnwritable"
# Exit code (slipway.api.artifacts) -> the reason the operator fails a BatchPrediction with, at once
# and never retried: training's, except that an unwritable output is OutputUnwritable (the job's
# failure.json may say either). The job exits 1 for anything else, which is retried.
BATCH_FAILURE_REASONS: dict[int, str] = {
    **{
        code: FAILURE_REASONS[code]
        for code in (EXIT_CONFIG, EXIT_FEATURE_SERVICE_NOT_FOUND, EXIT_DATASET_NOT_FOUND, EXIT_COLUMN_NOT_FOUND)
    },
    EXIT_ARTIFACTS_UNWRITABLE: OUTPUT_UNWRITABLE,
}


def output_file(output_uri: str, file: str) -> str:
    """Where the job writes `file` (manifest.json, failure.json) in spec.output.uri."""
    return f"{output_uri.rstrip('/')}/{file}"


class ResolvedVersion(StatusModel):
    """The ModelVersion the operator chose ('latest' resolved), as the job receives it."""

    name: str = Field(description="The ModelVersion's name.")
    version: int = Field(description="Its version number.")
    uri: str = Field(description="Its artifact directory (manifest.json and the TorchScript model).")
    feature_service: str = Field(description="spec.featureService, or else the version's lineage's.")


class BatchJobConfig(StatusModel):
    """What the operator hands the job in $SLIPWAY_BATCH_PREDICTION."""

    name: str = Field(description="The BatchPrediction's name.")
    namespace: str = Field(description="Its namespace.")
    attempt: int = Field(description="The attempt, from 0.")
    spec: BatchPredictionSpec = Field(description="The BatchPrediction's spec.")
    model_version: ResolvedVersion = Field(description="The version to score with.")


class BatchManifest(StatusModel):
    """Written by the job as manifest.json in spec.output.uri once every prediction is written."""

    batch_prediction: str = Field(description="The BatchPrediction's name.")
    attempt: int = Field(description="The attempt that wrote it: the operator ignores another attempt's file.")
    model: str = Field(description="The model.")
    version: int = Field(description="The version that scored every row.")
    model_version: str = Field(description="The ModelVersion's name.")
    feature_service: str = Field(description="The feature service joined.")
    input: str = Field(description="spec.input.uri.")
    rows_read: int = Field(description="Entity rows read.")
    rows_written: int = Field(description="Prediction rows written.")
    seconds: float = Field(description="Wall time of read, join, scoring and write.")
    files: list[str] = Field(default_factory=list, description="The parquet files written, relative to the output.")
