"""ModelDeployment -> InferenceService, with status lifted from what KServe reports.

One function reconciles a deployment from the operator's indexes; it is called on the
deployment's own changes, on its InferenceService's events and on new ModelVersions, so every
path computes the same answer (level-based), under a per-deployment lock.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import kopf

from ..api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from ..api.resources import DEPLOYMENT_LABEL, INFERENCE_SERVICES, MODEL_DEPLOYMENTS
from ..reconcile.conditions import condition, now_rfc3339
from ..reconcile.modeldeployment import Plan, plan_deployment
from ..reconcile.status import status_patch
from .events import announce, reference
from .metrics import counted

RETRY_DELAY = 30  # seconds; a new ModelVersion also triggers a reconcile at once


class DeploymentRecord(NamedTuple):
    owner: kopf.Body  # enough of the body for owner references and events
    generation: int | None
    spec: dict[str, Any]
    status: dict[str, Any]


@kopf.index(*MODEL_DEPLOYMENTS.ref)
def deployments(
    namespace: str | None, name: str, body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> Any:
    owner = reference(body["apiVersion"], body["kind"], namespace, name, meta["uid"])
    return {(namespace, name): DeploymentRecord(owner, meta.get("generation"), dict(spec), dict(status))}


@kopf.index(*MODEL_DEPLOYMENTS.ref)
def deployments_by_model(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> Any:
    return {(namespace, spec.get("model")): name}


@kopf.index(*INFERENCE_SERVICES.ref, labels={DEPLOYMENT_LABEL: kopf.PRESENT})
def inference_services(
    namespace: str | None, labels: kopf.Labels, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> Any:
    # Only what readiness needs: whole bodies (managedFields and all) would multiply memory.
    observed = {"metadata": {"generation": meta.get("generation"), "labels": dict(labels)}, "status": dict(status)}
    return {(namespace, labels[DEPLOYMENT_LABEL]): observed}


def reconcile_deployment(
    memo: kopf.Memo, namespace: str, name: str, indexes: dict[str, Any], full: bool, patch: kopf.Patch | None = None
) -> Plan | None:
    """Plan, apply the children (when `full`), and write status only if it changed.

    Inside the deployment's own handlers the status goes out with Kopf's patch (one request
    with Kopf's bookkeeping, whose result Kopf then recognises); elsewhere it is patched directly.
    """
    with memo.locks[(namespace, name)], counted(MODEL_DEPLOYMENTS.kind):
        record: DeploymentRecord | None = next(iter(indexes["deployments"].get((namespace, name), [])), None)
        if record is None:
            return None
        spec = ModelDeploymentSpec.model_validate(record.spec)
        # We are the status's only writer: what we last wrote is fresher than the index's view.
        # The deployment's own handlers start from the object itself, so a retried handler whose
        # earlier patch failed recomputes the status instead of trusting what was planned.
        uid = record.owner["metadata"]["uid"]
        known = record.status if patch is not None else memo.written.get(uid, record.status)
        current = ModelDeploymentStatus.model_validate(known)
        versions = list(indexes["model_versions"].get((namespace, spec.model), []))
        observed = next(iter(indexes["inference_services"].get((namespace, name), [])), None)

        def plan_with(isvc: dict[str, Any] | None) -> Plan:
            return plan_deployment(name, namespace, spec, current, versions, isvc, record.generation, now_rfc3339())

        plan = plan_with(observed)
        if full and plan.children:
            for child in plan.children:
                kopf.adopt(child, owner=record.owner)
                observed = memo.kube.apply(INFERENCE_SERVICES, child)
            plan = plan_with(observed)  # what was just applied, not the index's older view
        changes = status_patch(known, plan.status)
        if not changes:
            return plan
        if patch is not None:
            patch.status.update(changes)  # Kopf sends it when the handler returns
        else:
            memo.kube.patch_status(MODEL_DEPLOYMENTS, namespace, name, changes)
        memo.written[uid] = plan.status.model_dump(by_alias=True, exclude_none=True)
        _announce_transition(record.owner, current, plan.status)
        return plan


def _announce_transition(owner: kopf.Body, before: ModelDeploymentStatus, after: ModelDeploymentStatus) -> None:
    old, new = condition(before.conditions, "Ready"), condition(after.conditions, "Ready")
    if old is None and after.phase == "Progressing":
        return  # a new deployment starting its first rollout is not news; problems still are
    if new is None or (
        old is not None and (old.status, old.reason) == (new.status, new.reason) and before.phase == after.phase
    ):
        return
    announce(
        owner, new.status == "False" and after.phase in ("Pending", "Failed", "Degraded"), new.reason, after.message
    )


@kopf.on.resume(*MODEL_DEPLOYMENTS.ref)
@kopf.on.create(*MODEL_DEPLOYMENTS.ref)
@kopf.on.update(*MODEL_DEPLOYMENTS.ref)
def reconcile(namespace: str | None, name: str, memo: kopf.Memo, patch: kopf.Patch, **kwargs: Any) -> None:
    plan = reconcile_deployment(memo, namespace or "", name, kwargs, full=True, patch=patch)
    if plan is not None and plan.retry:
        raise kopf.TemporaryError(plan.status.message, delay=RETRY_DELAY)


@kopf.on.event(*INFERENCE_SERVICES.ref, labels={DEPLOYMENT_LABEL: kopf.PRESENT})
def lift_inferenceservice_status(
    type: str, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any
) -> None:
    # A deleted InferenceService is recreated; otherwise only the status needs lifting.
    reconcile_deployment(memo, namespace or "", labels[DEPLOYMENT_LABEL], kwargs, full=type == "DELETED")
