"""Which predictor settings each version runs with.

The candidate always runs with `spec.predictor`. The stable version runs with the settings it was
promoted with (`status.stablePredictor`) for as long as the spec asks for another version: a spec
change of version and predictor together (a new engine, image or resources) must not restart the
stable version mid-rollout, since it is the one taking the traffic and the one a rollback falls
back to. Once the spec asks for the stable version itself, the record follows the spec again, and
a predictor change alone applies to the stable version at once, as a Deployment's template does.
The former stable version, kept warm after a switch, keeps its settings too (previousPredictor),
so a switch back is instant. Replica counts are not recorded: scaling applies to every version.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Predictor

SCALING_FIELDS = frozenset({"min_replicas", "max_replicas"})


def record_predictor(predictor: Predictor) -> dict[str, Any]:
    """spec.predictor as status keeps it: JSON, without the replica counts."""
    return predictor.model_dump(by_alias=True, exclude_none=True, exclude=set(SCALING_FIELDS))


def predictor_of(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, version: int) -> Predictor:
    """The predictor `version` runs with: its recorded settings and the spec's replica counts."""
    recorded: dict[str, Any] | None = None
    if version == status.stable_version:
        recorded = status.stable_predictor
    elif version == status.previous_version:
        recorded = status.previous_predictor
    if recorded is None:
        return spec.predictor
    scaling = {"minReplicas": spec.predictor.min_replicas, "maxReplicas": spec.predictor.max_replicas}
    try:
        return Predictor.model_validate({**recorded, **scaling})
    except ValidationError:  # recorded under another schema (an older operator): the spec's is all there is
        return spec.predictor
