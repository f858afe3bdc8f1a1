"""What the operator fills in where a resource leaves a field unset: the platform team's choices.

The Helm chart passes its values (images.trainer, images.predictor, prometheus.url, traffic.backend)
as SLIPWAY_* environment variables; a resource that sets the field itself always wins. They are
filled in when the operator reads a spec, so the builders and the rollout engine only ever see a
complete one, and a field with neither value is an error that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .batchprediction import BatchPredictionSpec
from .modeldeployment import (
    DEFAULT_PROMETHEUS_URL,
    DEFAULT_TRAFFIC,
    ModelDeploymentSpec,
    Prometheus,
    TrafficMode,
)
from .trainingrun import TrainingRunSpec

ENV = {
    "trainer_image": "SLIPWAY_TRAINER_IMAGE",
    "predictor_image": "SLIPWAY_PREDICTOR_IMAGE",
    "prometheus_url": "SLIPWAY_PROMETHEUS_URL",
    "traffic": "SLIPWAY_TRAFFIC",
}


RunsOnTrainer = TypeVar("RunsOnTrainer", TrainingRunSpec, BatchPredictionSpec)


class MissingField(ValueError):
    """A required field is unset and the operator has no default for it; the message names both."""


class UnsupportedField(MissingField):
    """A field set that the operator's defaults cannot serve (a shadow stage with traffic: kserve as
    the operator's default, which admission cannot see); the message names the field."""


class OperatorDefaults(BaseModel):
    model_config = ConfigDict(frozen=True)

    trainer_image: str = Field("", description="Default spec.image of a TrainingRun and a BatchPrediction ('' = none).")
    predictor_image: str = Field("", description="Default spec.predictor.image of a ModelDeployment ('' = none).")
    prometheus_url: str = Field(DEFAULT_PROMETHEUS_URL, pattern=r"^https?://\S+$")
    traffic: TrafficMode = DEFAULT_TRAFFIC

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorDefaults:
        """From SLIPWAY_* variables; a bad one raises ValueError naming the variable."""
        given = {field: env[var].strip() for field, var in ENV.items() if env.get(var, "").strip()}
        try:
            return cls.model_validate(given)
        except ValidationError as error:  # the fields' own rules; the message names the variable
            first = error.errors()[0]
            field = str(first["loc"][0])
            raise ValueError(f"{ENV[field]}: {first['msg']} (got {given[field]!r})") from None

    def run(self, spec: RunsOnTrainer) -> RunsOnTrainer:
        """A TrainingRun's or BatchPrediction's spec with spec.image set: both run the trainer image."""
        if spec.image:
            return spec
        if not self.trainer_image:
            raise MissingField("spec.image is not set and the operator has no default trainer image (images.trainer)")
        return spec.model_copy(update={"image": self.trainer_image})

    def deployment(self, spec: ModelDeploymentSpec) -> ModelDeploymentSpec:
        image = spec.predictor.image or self.predictor_image
        if not image:
            raise MissingField(
                "spec.predictor.image is not set and the operator has no default predictor image (images.predictor)"
            )
        traffic = spec.traffic or self.traffic
        canary = spec.strategy.canary
        for field, shadow in (
            ("canary", canary.shadow if canary else None),
            ("blueGreen", spec.strategy.blue_green.shadow),
        ):
            if shadow is not None and traffic == "kserve":
                raise UnsupportedField(
                    f"spec.strategy.{field}.shadow needs traffic: gateway, and spec.traffic is unset while the "
                    "operator's default is kserve (traffic.backend), which cannot mirror requests"
                )
        return spec.model_copy(
            update={
                "predictor": spec.predictor.model_copy(update={"image": image}),
                "traffic": traffic,
                "prometheus": spec.prometheus or Prometheus(url=self.prometheus_url),
            }
        )
