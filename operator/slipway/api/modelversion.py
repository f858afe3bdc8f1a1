"""ModelVersion: the registry's immutable record of one trained model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import (
    ARTIFACT_SCHEMES,
    ApiModel,
    Condition,
    StatusModel,
    cel,
    conditions_field,
    dns_label_rule,
    rule,
    uri_rule,
)


class Gates(ApiModel):
    passed: bool = Field(description="Whether the model passed its data-validation and evaluation gates.")
    metric: str = Field("", description="The gate's metric.", max_length=64)
    value: float | None = Field(None, description="The metric's value.")
    reason: str = Field("", description="Why the gates passed or not.", max_length=1024)


class Lineage(ApiModel):
    feature_service: str = Field("", description="Feast feature service the model was trained on.", max_length=128)
    feature_views: list[str] = Field(default_factory=list, description="Feast feature views behind it.", max_length=64)
    dataset_uri: str = Field("", description="Entity/label dataset URI.", max_length=2048)
    dataset_sha256: str = Field("", description="Content hash of the dataset.", max_length=64)
    image: str = Field("", description="Trainer image.", max_length=512)
    hyperparameters: dict[str, str] = Field(default_factory=dict, description="Hyperparameters.", max_length=64)
    ray_version: str = Field("", description="Ray version used for training.", max_length=32)
    torch_version: str = Field("", description="torch version used for training.", max_length=32)


class ModelVersionSpec(ApiModel):
    """An immutable record: a new model is a new ModelVersion, never an edit."""

    model_config = cel(rule("self == oldSelf", "spec is immutable: register a new ModelVersion instead"))

    model: str = Field(
        description="Model name (a DNS-1123 label).", max_length=63, json_schema_extra=dns_label_rule("spec.model")
    )
    version: int = Field(ge=1, description="Version number, unique per model, from 1.")
    uri: str = Field(
        description="Artifact location (s3://, gs://, file:// or pvc://).",
        max_length=2048,
        json_schema_extra=uri_rule("spec.uri", ARTIFACT_SCHEMES),
    )
    format: Literal["torchscript"] = Field("torchscript", description="Artifact format the predictor loads.")
    training_run: str = Field(
        "", description="The TrainingRun that made it; empty when registered by hand.", max_length=253
    )
    metrics: dict[str, str] = Field(default_factory=dict, description="Held-out metrics.", max_length=64)
    lineage: Lineage | None = Field(None, description="Where the model came from.")
    gates: Gates | None = Field(
        None, description="The gates' verdict; a version registered by hand without it counts as passed."
    )


class ModelVersionStatus(StatusModel):
    metric: str = Field("", description="The gate metric and its value, for display (e.g. auc=0.86).")
    gates_passed: bool | None = Field(None, description="Whether this version may be served by 'latest'.")
    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] = conditions_field()
