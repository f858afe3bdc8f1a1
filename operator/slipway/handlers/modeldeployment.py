"""ModelDeployment -> InferenceServices (+ HTTPRoute), driven by the rollout engine.

One function reconciles a deployment from the operator's indexes; it is called on the
deployment's own changes (spec and the rollout annotations a user sets), on its children's
events, on new ModelVersions, and on a timer while a rollout is under way (pauses, analysis,
deadlines), so every path computes the same answer, under a per-deployment lock.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import kopf

from ..api.defaults import MissingField
from ..api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from ..api.modelversion import ModelVersionSpec
from ..api.resources import DEPLOYMENT_LABEL, HTTP_ROUTES, INFERENCE_SERVICES, MODEL_DEPLOYMENTS, MODEL_VERSIONS
from ..prometheus import measure
from ..reconcile import reasons
from ..reconcile.analysis import QueryContext
from ..reconcile.modeldeployment import Observed, Plan, plan_deployment
from ..reconcile.rollout import (
    Commands,
    analysis_due,
    analysis_of,
    commands_from,
    needs_ticks,
    only_deadline_timed,
    progress_deadline,
    rfc3339,
    traffic_of,
)
from ..reconcile.status import fresher_status, status_patch
from .events import announce, reference
from .metrics import counted, observe_deployment
from .persistence import without_finalizer
from .retries import outlasting_restarts
from .views import entries

RETRY_DELAY = 30  # seconds; a new ModelVersion also triggers a reconcile at once
TICK_SECONDS = 0.5  # how often a rollout under way is looked at (bounds how late a measurement is)
# A tick that failed (the API server down longer than a call waits) is tried again this soon, not
# after Kopf's default backoff: a rollout's deadlines and measurements are the ticks' to keep.
TICK_BACKOFF_SECONDS = 2.0
# While a candidate is not ready, time matters only for its progress deadline (minutes, usually):
# looked at this often, in the event loop, a deadline is acted on at most this late.
DEADLINE_TICK_SECONDS = 5.0


class DeploymentRecord(NamedTuple):
    owner: kopf.Body  # enough of the body for owner references and events
    generation: int | None
    spec: dict[str, Any]
    status: dict[str, Any]
    commands: Commands
    resource_version: str | None


@kopf.index(*MODEL_DEPLOYMENTS.ref)
async def deployments(
    namespace: str | None,
    name: str,
    body: kopf.Body,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    annotations: kopf.Annotations,
    **_: Any,
) -> Any:
    return {(namespace, name): _record(body, meta, spec, status, annotations)}


def _record(
    body: Mapping[str, Any],
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    annotations: Mapping[str, str],
) -> DeploymentRecord:
    owner = reference(body["apiVersion"], body["kind"], meta.get("namespace"), meta["name"], meta["uid"])
    return DeploymentRecord(
        owner, meta.get("generation"), dict(spec), dict(status), commands_from(annotations), meta.get("resourceVersion")
    )


@kopf.index(*MODEL_DEPLOYMENTS.ref)
async def deployments_by_model(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> Any:
    return {(namespace, spec.get("model")): name}


@kopf.index(*MODEL_DEPLOYMENTS.ref)
async def served_versions(namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any) -> Any:
    """Each model's stable versions, so a TrainingRun finds what serves without walking every
    deployment of its model (bench/operator_scale.py: 1,000 runs, each of 1,000 deployments)."""
    stable = status.get("stableVersion")
    return {} if stable is None else {(namespace, spec.get("model")): int(stable)}


@kopf.index(*INFERENCE_SERVICES.ref, labels={DEPLOYMENT_LABEL: kopf.PRESENT})
async def inference_services(
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> Any:
    # Only what the rollout needs: whole bodies (managedFields and all) would multiply memory.
    percent = spec.get("predictor", {}).get("canaryTrafficPercent")
    observed = {
        "metadata": {"name": name, "generation": meta.get("generation"), "labels": dict(labels)},
        "spec": {"predictor": {} if percent is None else {"canaryTrafficPercent": percent}},
        "status": dict(status),
    }
    return {(namespace, labels[DEPLOYMENT_LABEL]): observed}


@kopf.index(*HTTP_ROUTES.ref, labels={DEPLOYMENT_LABEL: kopf.PRESENT})
async def http_routes(
    namespace: str | None, labels: kopf.Labels, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> Any:
    observed = {"metadata": {"generation": meta.get("generation")}, "spec": dict(spec), "status": dict(status)}
    return {(namespace, labels[DEPLOYMENT_LABEL]): observed}


def reconcile_deployment(
    memo: kopf.Memo, namespace: str, name: str, indexes: dict[str, Any], full: bool
) -> Plan | None:
    """Observe, measure when due, run the engine, apply the children (when `full`), write status.

    The status is patched here, under the deployment's lock, by every caller. Handing it to
    Kopf's patch instead sends it after the handler returns and the lock is released, so a
    tick's newer status (RollingBack -> Degraded) could land first and be overwritten by the
    older one, which memo.written then hid from every later tick.
    """
    with memo.locks[(namespace, name)], counted(MODEL_DEPLOYMENTS.kind):
        record = _indexed(indexes, namespace, name)
        if record is None:
            return None
        # memo.written is updated only after a patch succeeded: what we last wrote is fresher
        # than the index's view, until the index shows that write or a later one (another
        # replica's, written while this one stood by).
        uid = record.owner["metadata"]["uid"]
        known = fresher_status(memo.written.get(uid), memo.written_at.get(uid), record.status, record.resource_version)
        try:
            spec = memo.defaults.deployment(ModelDeploymentSpec.model_validate(record.spec))
        except MissingField as error:  # nothing can be built: say so, and leave traffic as it is
            current = ModelDeploymentStatus.model_validate(known)
            # observedGeneration too: the refusal is about this spec, not the one last planned.
            update = {"reason": reasons.INVALID_SPEC, "message": str(error), "observed_generation": record.generation}
            refused = current.model_copy(update=update)
            changes = status_patch(known, refused)
            if changes:
                memo.written_at[uid] = memo.kube.patch_status(MODEL_DEPLOYMENTS, namespace, name, changes)
                memo.written[uid] = refused.model_dump(by_alias=True, exclude_none=True)
                announce(record.owner, True, reasons.INVALID_SPEC, str(error))
            return None
        # What the index and memo.written show may be behind: after this replica stood by (Kopf
        # peering), its indexes and what it last wrote are as old as the pause, until the
        # watches list again. So before anything is written, the deployment is read as it is
        # now, and the rollout planned again from it when it moved on meanwhile (and from the
        # registry as it is now, below, when a rollout is about to start).
        view_at = record.resource_version if known is record.status else memo.written_at.get(uid)
        planner = _planner(memo, namespace, name, spec, record, known, indexes)
        plan = planner(_observed(indexes, namespace, name))
        writes = full or traffic_of(ModelDeploymentStatus.model_validate(known)) != plan.traffic
        if (writes or status_patch(known, plan.status)) and _stood_by(memo):
            live = next(iter(memo.kube.list_objects(MODEL_DEPLOYMENTS, namespace, f"metadata.name={name}")), None)
            if live is None or live["metadata"]["uid"] != uid:
                return None  # deleted meanwhile
            moved_on = live["metadata"].get("resourceVersion") != view_at
            if moved_on:
                meta = live["metadata"]
                record = _record(live, meta, live["spec"], live.get("status") or {}, meta.get("annotations") or {})
                known = record.status
                try:
                    spec = memo.defaults.deployment(ModelDeploymentSpec.model_validate(record.spec))
                except MissingField:
                    return None  # a new spec, refused by the reconcile its event brings
            # A rollout about to start: the version it resolves to from the registry as it is now,
            # not from the index (after a pause, "latest" could resolve to a version long replaced).
            candidate = plan.status.candidate_version
            if moved_on or (
                candidate is not None and candidate != ModelDeploymentStatus.model_validate(known).candidate_version
            ):
                registry = memo.kube.list_objects(MODEL_VERSIONS, namespace)
                versions = [ModelVersionSpec.model_validate(v["spec"]) for v in registry]
                planner = _planner(memo, namespace, name, spec, record, known, indexes, versions)
                plan = planner(_observed(indexes, namespace, name))
                writes = full or traffic_of(ModelDeploymentStatus.model_validate(known)) != plan.traffic
        if writes:
            after = _apply_children(memo, record.owner, namespace, plan, _observed(indexes, namespace, name))
            # The status is written for the children as they are now (a new InferenceService:
            # "has not reported readiness yet", not "does not exist yet"), so their first events
            # find nothing to change: one status write where there were two. Only when the engine
            # would not act differently on what the writes returned.
            settled = planner(after)
            if (settled.traffic, settled.keep, settled.keep_route, settled.children) == (
                plan.traffic,
                plan.keep,
                plan.keep_route,
                plan.children,
            ):
                plan = settled
        changes = status_patch(known, plan.status)
        if changes:
            memo.written_at[uid] = memo.kube.patch_status(MODEL_DEPLOYMENTS, namespace, name, changes)
            memo.written[uid] = plan.status.model_dump(by_alias=True, exclude_none=True)
        for event in plan.events:
            announce(record.owner, event.warning, event.reason, event.message)
        observe_deployment(namespace, name, plan.status)
        return plan


def _indexed(indexes: dict[str, Any], namespace: str, name: str) -> DeploymentRecord | None:
    """The deployment as the index last saw it."""
    record: DeploymentRecord | None = next(iter(indexes["deployments"].get((namespace, name), [])), None)
    return record


def _stood_by(memo: kopf.Memo) -> bool:
    """Whether this replica may have stood by for another (kube/peers.py): then what its indexes
    and memo.written show can be as old as the pause, and a write must first read live."""
    return memo.peers is not None and memo.peers.shared.is_set()


def _observed(indexes: dict[str, Any], namespace: str, name: str) -> Observed:
    """The deployment's children as the indexes show them."""
    isvcs = {i["metadata"]["name"]: i for i in entries(indexes["inference_services"], (namespace, name))}
    return Observed(isvcs, next(iter(indexes["http_routes"].get((namespace, name), [])), None))


def _planner(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    spec: ModelDeploymentSpec,
    record: DeploymentRecord,
    known: dict[str, Any],
    indexes: dict[str, Any],
    versions: Sequence[ModelVersionSpec] | None = None,
) -> Callable[[Observed], Plan]:
    """Measures when due (once), and returns the engine bound to everything but the children:
    it runs on the registry's `versions` when they were read, else on the index's."""
    current = ModelDeploymentStatus.model_validate(known)
    if versions is None:
        versions = entries(indexes["model_versions"], (namespace, spec.model))
    now = datetime.now(UTC)
    analysis = None
    if analysis_due(spec, current, now):
        settings = analysis_of(spec)
        assert settings is not None and current.candidate_version is not None  # analysis_due says so
        context = QueryContext(
            namespace, spec.model, current.candidate_version, current.stable_version, settings.interval
        )
        assert spec.prometheus is not None  # filled in with the operator's default
        analysis = measure(spec.prometheus.url, settings.metrics, context, rfc3339(now))

    def plan(observed: Observed) -> Plan:
        return plan_deployment(
            name,
            namespace,
            spec,
            current,
            versions,
            observed,
            record.generation,
            now,
            memo.routing,
            analysis,
            record.commands,
        )

    return plan


def _apply_children(memo: kopf.Memo, owner: kopf.Body, namespace: str, plan: Plan, before: Observed) -> Observed:
    """Applies the plan's children; returns them as the writes left them."""
    isvcs = {name: isvc for name, isvc in before.isvcs.items() if name in plan.keep}
    route = before.route if plan.keep_route else None
    # InferenceServices first, the route last: a backend exists before traffic is sent to it.
    for child in plan.children:
        child = copy.deepcopy(child)  # the plan stays as planned (compared after the writes)
        kopf.adopt(child, owner=owner)
        if child["kind"] == HTTP_ROUTES.kind:
            route = memo.kube.apply(HTTP_ROUTES, child)
        else:
            isvcs[child["metadata"]["name"]] = memo.kube.apply(INFERENCE_SERVICES, child)
    for stale in sorted(set(before.isvcs) - plan.keep):
        memo.kube.delete(INFERENCE_SERVICES, namespace, stale)
    if before.route is not None and not plan.keep_route:
        memo.kube.delete(HTTP_ROUTES, namespace, owner["metadata"]["name"])
    return Observed(isvcs, route)


@kopf.on.resume(*MODEL_DEPLOYMENTS.ref)
@kopf.on.create(*MODEL_DEPLOYMENTS.ref)
@kopf.on.update(*MODEL_DEPLOYMENTS.ref)
def reconcile(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    plan = reconcile_deployment(memo, namespace or "", name, kwargs, full=True)
    if plan is not None and plan.retry:
        raise kopf.TemporaryError(plan.status.message, delay=RETRY_DELAY)


def _steps_under_way(status: kopf.Status, **_: Any) -> bool:
    current = ModelDeploymentStatus.model_validate(dict(status))
    return needs_ticks(current) and not only_deadline_timed(current)


def _waiting_for_candidate(status: kopf.Status, **_: Any) -> bool:
    return only_deadline_timed(ModelDeploymentStatus.model_validate(dict(status)))


@without_finalizer
@kopf.timer(*MODEL_DEPLOYMENTS.ref, interval=TICK_SECONDS, backoff=TICK_BACKOFF_SECONDS, when=_steps_under_way)
def tick(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """Time moves a rollout too: pauses end, measurements fall due, deadlines pass.

    Children are applied only when the traffic changed: an idle tick makes no API calls.
    """
    reconcile_deployment(memo, namespace or "", name, kwargs, full=False)


@without_finalizer
@kopf.timer(*MODEL_DEPLOYMENTS.ref, interval=DEADLINE_TICK_SECONDS, when=_waiting_for_candidate)
async def watch_deadline(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A candidate that is not ready yet: its readiness comes as an event, and only its progress
    deadline is up to time. Checked in the event loop, so the waiting deployments of a large
    fleet cost no thread and no reconcile until the deadline passes."""
    record = _indexed(kwargs, namespace or "", name)
    if record is None:
        return
    try:
        spec = memo.defaults.deployment(ModelDeploymentSpec.model_validate(record.spec))
    except MissingField:
        return  # refused by the reconcile its event brought
    now = datetime.now(UTC)
    if now >= progress_deadline(spec, ModelDeploymentStatus.model_validate(record.status), now):
        await asyncio.to_thread(reconcile_deployment, memo, namespace or "", name, kwargs, False)


@kopf.on.event(*INFERENCE_SERVICES.ref, labels={DEPLOYMENT_LABEL: kopf.PRESENT})
@outlasting_restarts
def lift_inferenceservice_status(
    type: str, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any
) -> None:
    # A deleted InferenceService is recreated; otherwise only the status needs lifting.
    reconcile_deployment(memo, namespace or "", labels[DEPLOYMENT_LABEL], kwargs, full=type == "DELETED")


@kopf.on.event(*HTTP_ROUTES.ref, labels={DEPLOYMENT_LABEL: kopf.PRESENT})
@outlasting_restarts
def follow_route(type: str, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any) -> None:
    # A Gateway accepting new weights can move the rollout on; a deleted route is recreated.
    reconcile_deployment(memo, namespace or "", labels[DEPLOYMENT_LABEL], kwargs, full=type == "DELETED")
