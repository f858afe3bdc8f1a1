"""ModelVersion: display status, and a nudge to the deployments that may now serve it."""

from __future__ import annotations

from typing import Any

import kopf

from ..api.modelversion import ModelVersionSpec, ModelVersionStatus
from ..api.resources import MODEL_VERSIONS
from ..reconcile import reasons
from ..reconcile.conditions import now_rfc3339, set_condition
from ..reconcile.status import status_patch
from ..reconcile.versions import gates_passed, primary_metric
from .modeldeployment import reconcile_deployment
from .retries import outlasting_restarts
from .views import entries


@kopf.index(*MODEL_VERSIONS.ref)
async def model_versions(namespace: str | None, spec: kopf.Spec, **_: Any) -> Any:
    """Versions by (namespace, model): what 'latest' and version numbers resolve against."""
    version = ModelVersionSpec.model_validate(dict(spec))
    return {(namespace, version.model): version}


@kopf.on.resume(*MODEL_VERSIONS.ref)
@kopf.on.create(*MODEL_VERSIONS.ref)
def describe(spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    version = ModelVersionSpec.model_validate(dict(spec))
    current = ModelVersionStatus.model_validate(dict(status))
    passed = gates_passed(version)
    message = f"version {version.version} of {version.model} " + ("may be served" if passed else "failed its gates")
    desired = current.model_copy(
        update={
            "metric": primary_metric(version),
            "gates_passed": passed,
            "observed_generation": meta.get("generation"),
            "conditions": set_condition(
                current.conditions,
                "Registered",
                "True",
                reasons.REGISTERED,
                message,
                meta.get("generation"),
                now_rfc3339(),
            ),
        }
    )
    changes = status_patch(dict(status), desired)
    if changes:
        patch.status.update(changes)


@kopf.on.event(*MODEL_VERSIONS.ref)
@outlasting_restarts
def roll_out(type: str, namespace: str | None, spec: kopf.Spec, memo: kopf.Memo, **kwargs: Any) -> None:
    """A new or removed version may change what a deployment of the same model serves."""
    if type is None:
        return  # the initial listing: the deployments' own resume handlers reconcile them
    model = spec.get("model")
    for name in entries(kwargs["deployments_by_model"], (namespace, model)):
        reconcile_deployment(memo, namespace or "", name, kwargs, full=True)
