"""The job's configuration: the BatchJobConfig in `$SLIPWAY_BATCH_PREDICTION` and where it runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipelines.churn import config as training
from pipelines.churn.sources import Fields
from slipway.api.batchprediction import BATCH_CONFIG_ENV, BatchJobConfig

# The spec fields a user error names (pipelines.churn.failures).
FIELDS = Fields(dataset="spec.input.uri", service="spec.featureService", timestamp="spec.input.timestampColumn")
OUTPUT_FIELD = "spec.output.uri"


@dataclass(frozen=True)
class BatchConfig:
    job: BatchJobConfig
    runtime: training.Runtime  # the Feast repository, a local Ray's CPUs, the claims' mount: as training

    @property
    def device(self) -> str:
        return "cuda" if self.job.spec.scaling.gpus_per_worker > 0 else "cpu"


def load(env: Mapping[str, str]) -> BatchConfig:
    """Raises ValueError (or pydantic's ValidationError, a ValueError) when the variable is missing or wrong."""
    raw = env.get(BATCH_CONFIG_ENV)
    if not raw:
        raise ValueError(f"${BATCH_CONFIG_ENV} is not set: it carries the BatchPrediction and its ModelVersion")
    return BatchConfig(job=BatchJobConfig.model_validate_json(raw), runtime=training.runtime(env))
