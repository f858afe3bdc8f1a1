"""TrainingSchedule: observe (time, the drift value, the schedule's runs), decide, act.

A timer looks at every schedule each TICK_SECONDS (cron has minute resolution); a retrain request
(the annotation `kubectl slipway retrain` sets) is acted on at once by an event handler. Both call
one function under the schedule's lock; the decision is the pure trigger engine's
(reconcile/trainingschedule.py), and all its state is in the schedule's status.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from ..api.resources import RETRAIN_ANNOTATION, SCHEDULE_LABEL, TRAINING_RUNS, TRAINING_SCHEDULES
from ..api.trainingschedule import TrainingScheduleSpec, TrainingScheduleStatus
from ..builders.trainingschedule import build_scheduled_run
from ..prometheus import value_of
from ..reconcile.analysis import drift_query
from ..reconcile.rollout import parse_time
from ..reconcile.status import status_patch
from ..reconcile.trainingschedule import DriftReading, Observations, RunView, decide
from .events import announce, reference
from .metrics import counted
from .retries import outlasting_restarts
from .views import entries

TICK_SECONDS = 10.0


@kopf.index(*TRAINING_RUNS.ref, labels={SCHEDULE_LABEL: kopf.PRESENT})
async def scheduled_runs(
    namespace: str | None, name: str, labels: kopf.Labels, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> Any:
    """Each schedule's runs, as much of them as the trigger engine reads; a run being deleted is
    gone already (not pruned, nor counted as active, twice)."""
    if meta.get("deletionTimestamp"):
        return {}
    view = RunView(
        name=name,
        phase=str(status.get("phase", "")),
        created=str(meta.get("creationTimestamp", "")),
        completion_time=status.get("completionTime"),
        model_version=status.get("modelVersion"),
    )
    return {(namespace, labels[SCHEDULE_LABEL]): view}


def reconcile_schedule(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    body: kopf.Body,
    annotations: kopf.Annotations,
    indexes: dict[str, Any],
) -> None:
    meta = body["metadata"]
    owner = reference(body["apiVersion"], body["kind"], namespace, name, meta["uid"])
    with memo.locks[("schedule", namespace, name)], counted(TRAINING_SCHEDULES.kind):
        # We are the status's only writer: what we last wrote is fresher than the watch's view.
        known = memo.written.get(meta["uid"], dict(body.get("status") or {}))
        spec = TrainingScheduleSpec.model_validate(dict(body["spec"]))
        current = TrainingScheduleStatus.model_validate(known)
        drift = None
        if spec.drift is not None:
            url = spec.drift.prometheus.url if spec.drift.prometheus else memo.defaults.prometheus_url
            value, problem = value_of(url, drift_query(namespace, spec.template.model, spec.drift.query))
            drift = DriftReading(value, problem if value is None else "")
        observations = Observations(
            created=parse_time(meta["creationTimestamp"]),
            runs=entries(indexes["scheduled_runs"], (namespace, name)),
            drift=drift,
            manual_request=annotations.get(RETRAIN_ANNOTATION, ""),
            generation=meta.get("generation"),
        )
        decision = decide(name, spec, current, observations, datetime.now(UTC))
        for doomed in decision.delete:
            memo.kube.delete(TRAINING_RUNS, namespace, doomed)
        if decision.create is not None:
            run = build_scheduled_run(name, namespace, spec.template, decision.create.trigger)
            kopf.adopt(run, owner=owner)
            memo.kube.create(TRAINING_RUNS, run)  # False (409): made before a restart; the name says it is ours
        changes = status_patch(known, decision.status)
        if changes:
            memo.kube.patch_status(TRAINING_SCHEDULES, namespace, name, changes)
            memo.written[meta["uid"]] = decision.status.model_dump(by_alias=True, exclude_none=True)
        for event in decision.events:
            announce(owner, event.warning, event.reason, event.message)


@kopf.timer(*TRAINING_SCHEDULES.ref, interval=TICK_SECONDS, backoff=TICK_SECONDS)  # a failed tick: the next one
def tick(
    namespace: str | None, name: str, body: kopf.Body, annotations: kopf.Annotations, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Time fires cron and drift triggers, and finished runs move the status on."""
    reconcile_schedule(memo, namespace or "", name, body, annotations, kwargs)


def _retrain_requested(annotations: kopf.Annotations, status: kopf.Status, **_: Any) -> bool:
    request = annotations.get(RETRAIN_ANNOTATION, "")
    return bool(request) and request != status.get("lastManualRequest")


@kopf.on.event(*TRAINING_SCHEDULES.ref, when=_retrain_requested)
@outlasting_restarts
def retrain(
    type: str,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    annotations: kopf.Annotations,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """A retrain request is acted on at once, not at the next tick."""
    if type != "DELETED":
        reconcile_schedule(memo, namespace or "", name, body, annotations, kwargs)
