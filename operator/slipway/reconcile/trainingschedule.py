"""The trigger engine of a TrainingSchedule: (spec, status, observations, now) -> (status, actions).

Pure and deterministic, like the rollout engine: every fact it needs across ticks (the last cron
time handled, the last retrain request consumed, since when drift has held, when the last run was
made) lives in the schedule's status, so a restarted operator neither forgets a cooldown nor fires
a trigger twice. A run's name is derived from its trigger alone (the cron time, the start of the
drift hold as recorded in status, the request id), so creating it again after a crash answers 409.

Rules that never bend: missing data or an unreachable Prometheus never fires a drift trigger (the
Drifting condition says Unknown, and the hold starts over); at most one run is made per tick;
after a downtime a cron schedule fires once, for its latest missed time, not once per missed time.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import NamedTuple

from ..api.base import Condition, ConditionStatus, seconds
from ..api.trainingschedule import (
    SuccessfulRun,
    TrainingScheduleSpec,
    TrainingScheduleStatus,
    TriggerRecord,
    TriggerType,
)
from . import reasons
from .conditions import set_condition
from .cron import latest_cron_time, next_cron_time, valid_cron, valid_zone
from .rollout import Event, parse_time, rfc3339

FINISHED = ("Succeeded", "Failed")
# A run just made may not be in the operator's view of the runs yet: it counts as active this long.
CREATE_GRACE_SECONDS = 60
READY, DRIFTING = "Ready", "Drifting"


class RunView(NamedTuple):
    """One of the schedule's TrainingRuns, as observed."""

    name: str
    phase: str  # Pending, Running, Succeeded or Failed ("" before the run's first status)
    created: str  # RFC 3339
    completion_time: str | None = None
    model_version: str | None = None


class DriftReading(NamedTuple):
    """One measurement of the drift value: None with the reason when there is none."""

    value: float | None
    problem: str = ""


class Observations(NamedTuple):
    created: datetime  # the schedule's creationTimestamp: a cron time before it never fires
    runs: tuple[RunView, ...] = ()
    drift: DriftReading | None = None  # None: no drift trigger configured
    manual_request: str = ""  # the retrain annotation's value
    generation: int | None = None


class NewRun(NamedTuple):
    name: str
    trigger: TriggerRecord


class Decision(NamedTuple):
    status: TrainingScheduleStatus
    create: NewRun | None  # at most one run per tick
    delete: tuple[str, ...]  # runs replaced (Replace) or beyond the history limits
    events: tuple[Event, ...]


def run_name(schedule: str, trigger: TriggerType, key: str | datetime) -> str:
    """`<schedule>-cron-<unix minute>`, `<schedule>-drift-<unix minute the hold began>` or
    `<schedule>-manual-<hash of the request id>`: the same trigger always names the same run."""
    if isinstance(key, datetime):
        return f"{schedule}-{trigger}-{int(key.timestamp()) // 60}"
    return f"{schedule}-{trigger}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


class _Pending(NamedTuple):
    type: TriggerType
    value: str
    name: str
    honours_cooldown: bool


def decide(
    name: str, spec: TrainingScheduleSpec, status: TrainingScheduleStatus, obs: Observations, now: datetime
) -> Decision:
    """One tick: which runs are active, which to prune, and whether a trigger makes a run now."""
    stamp = rfc3339(now)
    events: list[Event] = []
    st = status.model_copy(deep=True)
    st.observed_generation = obs.generation
    conditions = st.conditions

    # The runs: active ones (a run just made counts until it shows up), the newest success, history.
    observed = {run.name for run in obs.runs}
    active = sorted(run.name for run in obs.runs if run.phase not in FINISHED)
    last = st.last_trigger
    if (
        last is not None
        and last.run
        and last.run not in observed
        and (now - parse_time(last.time)).total_seconds() < CREATE_GRACE_SECONDS
    ):
        active = sorted({*active, last.run})
    st.last_successful_run = _newest_success(obs.runs, st.last_successful_run)
    delete = _beyond_history(obs.runs, spec)
    if delete:
        events.append(
            Event(False, reasons.RUNS_PRUNED, "deleted finished runs beyond the history limits: " + ", ".join(delete))
        )

    pending: list[_Pending] = []
    # Manual: a request id not consumed yet.
    if obs.manual_request and obs.manual_request != st.last_manual_request:
        pending.append(_Pending("manual", obs.manual_request, run_name(name, "manual", obs.manual_request), False))

    # Cron: the latest time due since the last one handled (or since the schedule was made).
    ready: tuple[ConditionStatus, str, str] = ("True", reasons.SCHEDULE_ACTIVE, "triggers are watched")
    st.next_schedule_time = None
    if spec.schedule is not None:
        problem = _schedule_problem(spec)
        if problem is not None:
            ready = ("False", *problem)
            previous = next((c for c in conditions if c.type == READY), None)
            if previous is None or previous.reason != problem[0]:
                events.append(Event(True, *problem))
        else:
            since = parse_time(st.last_schedule_time) if st.last_schedule_time else obs.created
            due = latest_cron_time(spec.schedule, now, spec.time_zone)
            if due > since:
                pending.append(_Pending("cron", rfc3339(due), run_name(name, "cron", due), True))
            st.next_schedule_time = rfc3339(next_cron_time(spec.schedule, now, spec.time_zone))

    # Drift: held above the threshold for spec.drift.for, counted from a start recorded in status.
    conditions = _drift(spec, st, obs, now, conditions, pending, name)

    if spec.suspend:
        ready = ("False", reasons.SUSPENDED, "spec.suspend is true: every trigger is skipped")
    conditions = set_condition(conditions, READY, *ready, obs.generation, stamp)

    create: NewRun | None = None
    runs = {run.name: run for run in obs.runs}
    for trigger in pending:
        made = runs.get(trigger.name)
        if made is not None:  # made before a restart whose status write was lost: record it, once
            st.last_trigger = TriggerRecord(type=trigger.type, time=made.created, value=trigger.value, run=made.name)
            _consume(st, trigger)
            continue
        skip = _skip(spec, st, trigger, active, now)
        if skip is not None:
            reason, why = skip
            if trigger.type == "drift":
                if st.drift_skipped != reason:  # one event per hold and reason, not one per tick
                    events.append(Event(False, reason, f"drift trigger ({trigger.value}) skipped: {why}"))
                st.drift_skipped = reason
                continue
            events.append(Event(False, reason, f"{trigger.type} trigger ({trigger.value}) skipped: {why}"))
            _consume(st, trigger)
            continue
        if active and spec.concurrency_policy == "Replace":
            delete += [run for run in active if run not in delete]
            events.append(Event(False, reasons.RUN_REPLACED, f"deleted {', '.join(active)} for {trigger.name}"))
            active = []
        record = TriggerRecord(type=trigger.type, time=stamp, value=trigger.value, run=trigger.name)
        create = NewRun(trigger.name, record)
        st.last_trigger = record
        _consume(st, trigger)
        events.append(
            Event(False, reasons.RUN_TRIGGERED, f"{trigger.type} trigger ({trigger.value}) made {trigger.name}")
        )
        active = sorted({*active, trigger.name})
        break  # one run per tick; what else is due is looked at again next tick
    st.active_runs = active
    st.conditions = conditions
    return Decision(st, create, tuple(delete), tuple(events))


def _schedule_problem(spec: TrainingScheduleSpec) -> tuple[str, str] | None:
    """(reason, message) when the cron schedule cannot be read: values cron refuses, an unknown zone."""
    if spec.schedule is not None and not valid_cron(spec.schedule):
        return reasons.INVALID_SCHEDULE, f"spec.schedule {spec.schedule!r} is not a valid cron expression"
    if not valid_zone(spec.time_zone):
        message = f"spec.timeZone {spec.time_zone!r} is not an IANA time zone name (e.g. Europe/Berlin)"
        return reasons.INVALID_TIME_ZONE, message
    return None


def _consume(st: TrainingScheduleStatus, trigger: _Pending) -> None:
    if trigger.type == "manual":
        st.last_manual_request = trigger.value
    elif trigger.type == "cron":
        st.last_schedule_time = trigger.value
    else:  # the hold is used up: drift must hold for spec.drift.for again to fire again
        st.drift_since = None
        st.drift_skipped = None


def _skip(
    spec: TrainingScheduleSpec, st: TrainingScheduleStatus, trigger: _Pending, active: list[str], now: datetime
) -> tuple[str, str] | None:
    """(reason, why) when the trigger may not make a run now."""
    if spec.suspend:
        return reasons.SKIPPED_SUSPENDED, "spec.suspend is true"
    if trigger.honours_cooldown and st.last_trigger is not None:
        until = parse_time(st.last_trigger.time) + timedelta(seconds=seconds(spec.cooldown))
        if now < until:
            return (
                reasons.SKIPPED_COOLDOWN,
                f"cooldown {spec.cooldown} after {st.last_trigger.run} lasts until {rfc3339(until)}",
            )
    if active and spec.concurrency_policy == "Forbid":
        return reasons.SKIPPED_RUN_ACTIVE, f"concurrencyPolicy Forbid and {', '.join(active)} still active"
    return None


def _drift(
    spec: TrainingScheduleSpec,
    st: TrainingScheduleStatus,
    obs: Observations,
    now: datetime,
    conditions: list[Condition],
    pending: list[_Pending],
    name: str,
) -> list[Condition]:
    stamp = rfc3339(now)
    drift = spec.drift
    if drift is None:
        st.drift_since = st.drift_value = st.drift_skipped = None
        return [c for c in conditions if c.type != DRIFTING]
    reading = obs.drift or DriftReading(None, "not measured")
    if reading.value is None or reading.value != reading.value:  # no value, or NaN
        st.drift_since = st.drift_value = st.drift_skipped = None
        why = reading.problem or "no data"
        return set_condition(
            conditions, DRIFTING, "Unknown", reasons.DRIFT_UNKNOWN, f"{why}; no drift trigger", obs.generation, stamp
        )
    value = round(reading.value, 6)
    st.drift_value = value
    if value <= drift.threshold:
        st.drift_since = st.drift_skipped = None
        message = f"{value:g} <= threshold {drift.threshold:g}"
        return set_condition(
            conditions, DRIFTING, "False", reasons.DRIFT_WITHIN_THRESHOLD, message, obs.generation, stamp
        )
    hold = seconds(drift.for_)
    message = f"{value:g} > threshold {drift.threshold:g}"
    if st.drift_since is None:
        # The hold starts now and is recorded first: a run is made only from a start already in
        # status, so its name (from that start) is the same after any restart.
        st.drift_since = stamp
        message += f" since {stamp}; a run is made once it has held for {drift.for_}"
    else:
        since = parse_time(st.drift_since)
        message += f" since {st.drift_since}"
        if (now - since).total_seconds() >= hold:
            pending.append(_Pending("drift", f"{value:g}", run_name(name, "drift", since), True))
        else:
            message += f"; a run is made once it has held for {drift.for_}"
    return set_condition(conditions, DRIFTING, "True", reasons.DRIFT_ABOVE_THRESHOLD, message, obs.generation, stamp)


def _finished_order(run: RunView) -> tuple[str, str]:
    return (run.completion_time or run.created, run.name)


def _newest_success(runs: tuple[RunView, ...], known: SuccessfulRun | None) -> SuccessfulRun | None:
    succeeded = [run for run in runs if run.phase == "Succeeded"]
    if not succeeded:
        return known
    newest = max(succeeded, key=_finished_order)
    if known is not None and (known.completion_time or "") > (newest.completion_time or newest.created):
        return known  # a newer success already pruned from view
    return SuccessfulRun(name=newest.name, model_version=newest.model_version, completion_time=newest.completion_time)


def _beyond_history(runs: tuple[RunView, ...], spec: TrainingScheduleSpec) -> list[str]:
    doomed: list[str] = []
    for phase, limit in (("Succeeded", spec.successful_runs_history_limit), ("Failed", spec.failed_runs_history_limit)):
        finished = sorted((run for run in runs if run.phase == phase), key=_finished_order, reverse=True)
        doomed += [run.name for run in finished[limit:]]
    return sorted(doomed)
