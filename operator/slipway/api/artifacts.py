"""The artifact layout, manifest and exit codes: the contract between the training pipeline and the operator.

A run writes everything under `<spec.artifacts.uri>/runs/<run name>/` (through fsspec, so
file://, s3:// and gs:// all work); the operator reads the manifest there when the RayJob
succeeds, and the failure file and validation report when it fails.

A failure the user must fix (a retry would fail the same way) ends the entrypoint with its own
exit code and, where the artifact location can be written, `failure.json` naming the spec field
and value. The operator learns the exit code from the RayJob's `status.message` (Ray's "Job
entrypoint command failed with exit code N", which KubeRay copies there), so the exit code alone
classifies the failure when the file cannot be written or read; the file adds the detail.
"""

from __future__ import annotations

from pydantic import Field

from .base import StatusModel
from .modelversion import Lineage

MODEL_FILE = "model.pt"  # TorchScript: loads without the training code
MANIFEST_FILE = "manifest.json"
VALIDATION_FILE = "validation.json"
CHECKPOINT_DIR = "checkpoints"
ACCEPTED_PROFILE = "profiles/accepted.json"  # under spec.artifacts.uri: the last accepted data
FAILURE_FILE = "failure.json"  # a user error's RunFailure; absent when the attempt failed otherwise

# Exit codes of the entrypoint for what the user must fix. 1 (an unexpected exception) and
# anything else, a signal included, is a failure time may fix: the operator retries it.
EXIT_CONFIG = 2  # the entrypoint could not read its configuration (argparse also exits 2)
EXIT_DATA_VALIDATION = 3  # the data failed validation
EXIT_FEATURE_SERVICE_NOT_FOUND = 4
EXIT_DATASET_NOT_FOUND = 5  # the entity dataset is missing or unreadable
EXIT_COLUMN_NOT_FOUND = 6  # the label, timestamp or an entity key column is not in the entity dataset
EXIT_INVALID_HYPERPARAMETER = 7
EXIT_ARTIFACTS_UNWRITABLE = 8

# Exit code -> the reason the operator fails the run with (constants in slipway.reconcile.reasons).
FAILURE_REASONS: dict[int, str] = {
    EXIT_CONFIG: "EntrypointConfigInvalid",
    EXIT_DATA_VALIDATION: "DataValidationFailed",
    EXIT_FEATURE_SERVICE_NOT_FOUND: "FeatureServiceNotFound",
    EXIT_DATASET_NOT_FOUND: "DatasetNotFound",
    EXIT_COLUMN_NOT_FOUND: "ColumnNotFound",
    EXIT_INVALID_HYPERPARAMETER: "InvalidHyperparameter",
    EXIT_ARTIFACTS_UNWRITABLE: "ArtifactsUnwritable",
}


def run_uri(artifacts_uri: str, run_name: str) -> str:
    """Where one run's artifacts live (a directory URI ending in '/')."""
    return f"{artifacts_uri.rstrip('/')}/runs/{run_name}/"


def profile_uri(artifacts_uri: str) -> str:
    return f"{artifacts_uri.rstrip('/')}/{ACCEPTED_PROFILE}"


class ValidationFailure(StatusModel):
    feature: str = Field(description="The column that failed.")
    check: str = Field(description="missing-column, type, missing-fraction or drift.")
    value: float | str | None = Field(None, description="What was measured.")
    limit: float | str | None = Field(None, description="What was allowed.")


class ValidationReport(StatusModel):
    passed: bool = Field(description="Whether the training data passed validation.")
    reason: str = Field("", description="One line naming the failing features and checks.")
    failures: list[ValidationFailure] = Field(default_factory=list, description="Every failed check.")
    rows: int = Field(0, description="Rows validated.")


class RunFailure(StatusModel):
    """Written as `failure.json` when an attempt ends with a failure the user must fix."""

    reason: str = Field(description="One of FAILURE_REASONS' values, e.g. FeatureServiceNotFound.")
    exit_code: int = Field(description="The entrypoint's exit code for this reason.")
    field: str = Field(description="The spec field to fix, e.g. spec.features.featureService.")
    value: str = Field(description="That field's value, as the run had it.")
    detail: str = Field(description="One line: what is wrong with the value, e.g. the feature services there are.")
    attempt: int = Field(description="The attempt that wrote it: the operator ignores another attempt's file.")


class ServingEvaluation(StatusModel):
    """The serving version's model scored on this run's held-out split (for mustBeatServing)."""

    version: int = Field(description="The serving ModelVersion's number, as the operator passed it.")
    uri: str = Field(description="Its artifact directory.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Its metrics on this run's held-out split; empty when it could not be scored."
    )
    problem: str = Field("", description="Why it could not be scored (e.g. its features differ); empty when scored.")


class Manifest(StatusModel):
    """Written next to the model when training and evaluation finish."""

    metrics: dict[str, float] = Field(description="Held-out metrics: auc, accuracy, logLoss.")
    features: list[str] = Field(description="Feature columns in the order the model takes them.")
    model_file: str = Field(MODEL_FILE, description="TorchScript file, relative to the run directory.")
    profile: dict[str, object] = Field(default_factory=dict, description="Profile of the training data.")
    lineage: Lineage = Field(default_factory=Lineage, description="Where the model came from.")
    validation: ValidationReport | None = Field(None, description="The data validation that passed.")
    epochs: int = Field(0, description="Epochs trained.")
    resumed_from_epoch: int | None = Field(None, description="Checkpoint epoch a retry resumed from.")
    serving: ServingEvaluation | None = Field(
        None, description="The serving version scored on the same held-out split, when the operator named one."
    )
