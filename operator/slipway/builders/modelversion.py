"""A successful TrainingRun -> its ModelVersion (the registry record)."""

from __future__ import annotations

from typing import Any

from ..api.artifacts import Manifest
from ..api.modelversion import Gates, ModelVersionSpec
from ..api.resources import MANAGED_BY, MODEL_LABEL, MODEL_VERSIONS, TRAINING_RUN_LABEL


def build_model_version(
    name: str, namespace: str, run_name: str, model: str, version: int, uri: str, manifest: Manifest, gates: Gates
) -> dict[str, Any]:
    spec = ModelVersionSpec(
        model=model,
        version=version,
        uri=uri,
        training_run=run_name,
        metrics={key: f"{value:.6g}" for key, value in sorted(manifest.metrics.items())},
        lineage=manifest.lineage,
        gates=gates,
    )
    return {
        "apiVersion": MODEL_VERSIONS.api_version,
        "kind": MODEL_VERSIONS.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, MODEL_LABEL: model, TRAINING_RUN_LABEL: run_name},
        },
        "spec": spec.model_dump(by_alias=True, exclude_none=True),
    }
