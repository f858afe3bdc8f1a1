"""The artifact layout and manifest: the contract between the training pipeline and the operator.

A run writes everything under `<spec.artifacts.uri>/runs/<run name>/` (through fsspec, so
file://, s3:// and gs:// all work); the operator reads the manifest there when the RayJob
succeeds, and the validation report when it fails.
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
EXIT_DATA_VALIDATION = 3  # the entrypoint's exit code when the data fails validation


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
