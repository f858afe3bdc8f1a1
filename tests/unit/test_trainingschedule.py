"""The TrainingSchedule trigger engine: (spec, status, observations, now) -> (status, actions).

Each case drives `decide` through time against a small simulated cluster (`World`): runs it made
appear (phases set by the case), a drift value per tick, the retrain annotation. The status goes
through JSON between ticks, as it does through the API server, so every case is also a case of an
operator restarted at every tick: nothing may live in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from slipway.api.resources import RETRAIN_ANNOTATION
from slipway.api.trainingschedule import SCHEDULE_NAME_LIMIT, TrainingScheduleSpec, TrainingScheduleStatus
from slipway.builders.trainingschedule import build_scheduled_run
from slipway.cli.plugin import request_patch
from slipway.prometheus import value_of
from slipway.reconcile import reasons
from slipway.reconcile.analysis import drift_query
from slipway.reconcile.conditions import condition
from slipway.reconcile.trainingschedule import (
    CREATE_GRACE_SECONDS,
    Decision,
    DriftReading,
    Observations,
    RunView,
    decide,
    latest_cron_time,
    run_name,
    valid_cron,
)

T0 = datetime(2026, 11, 22, 9, 0, 30, tzinfo=UTC)  # the schedule is made at 09:00:30
TEMPLATE = {
    "model": "churn",
    "features": {"featureService": "churn_v1", "entities": {"uri": "file:///data/labels.parquet"}, "label": "churned"},
    "artifacts": {"uri": "s3://models/churn/"},
}
NAME = "churn-nightly"


def spec(**fields: Any) -> TrainingScheduleSpec:
    return TrainingScheduleSpec.model_validate({"template": TEMPLATE, "cooldown": "0s", **fields})


def minute(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


@dataclass
class World:
    spec: TrainingScheduleSpec
    now: datetime = T0
    status: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, RunView] = field(default_factory=dict)
    drift: DriftReading | None = None
    request: str = ""
    made: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    last: Decision | None = None
    outcome: str = ""  # runs made finish at once with this phase ("": they stay Pending)

    def tick(self, after: timedelta = timedelta(seconds=10)) -> Decision:
        self.now += after
        drift = self.drift if self.spec.drift is not None else None
        obs = Observations(T0, tuple(self.runs.values()), drift, self.request, 1)
        current = TrainingScheduleStatus.model_validate(self.status)
        decision = decide(NAME, self.spec, current, obs, self.now)
        for name in decision.delete:
            self.runs.pop(name, None)
            self.deleted.append(name)
        if decision.create is not None:
            self.made.append(decision.create.name)
            # Created at once; 409 (already there) leaves the existing run alone.
            self.runs.setdefault(decision.create.name, RunView(decision.create.name, "", _stamp(self.now)))
            if self.outcome:
                self.finish(decision.create.name, self.outcome)
        self.status = json.loads(json.dumps(decision.status.model_dump(by_alias=True, exclude_none=True)))
        self.events += [(e.reason, e.message) for e in decision.events]
        self.last = decision
        return decision

    def run_for(self, duration: timedelta, step: timedelta = timedelta(seconds=10)) -> None:
        end = self.now + duration
        while self.now + step <= end:
            self.tick(step)

    def finish(self, name: str, phase: str, version: str | None = None) -> None:
        run = self.runs[name]
        self.runs[name] = run._replace(phase=phase, completion_time=_stamp(self.now), model_version=version)

    def reasons(self) -> list[str]:
        return [reason for reason, _ in self.events]

    def cond(self, type_: str) -> tuple[str, str] | None:
        found = condition(TrainingScheduleStatus.model_validate(self.status).conditions, type_)
        return None if found is None else (found.status, found.reason)


def _stamp(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


# -- cron -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "fires"),
    [
        ("0 * * * *", timedelta(minutes=30), False),  # 09:30: the next 10:00 not yet
        ("0 * * * *", timedelta(minutes=59, seconds=40), True),  # 10:00:10
        ("*/5 * * * *", timedelta(minutes=4), False),  # 09:04:30 (09:00 was before the schedule existed)
        ("*/5 * * * *", timedelta(minutes=5), True),  # 09:05:30
        ("@hourly", timedelta(minutes=59, seconds=30), True),  # 10:00:00 exactly
        ("30 9 * * *", timedelta(minutes=30), True),
        ("30 9 * * *", timedelta(minutes=29), False),
    ],
)
def test_cron_fires_when_due_and_not_before(expression: str, after: timedelta, fires: bool) -> None:
    world = World(spec(schedule=expression))
    decision = world.tick(after)
    assert (decision.create is not None) is fires
    if fires:
        due = latest_cron_time(expression, world.now)
        assert world.made == [f"{NAME}-cron-{minute(due)}"]
        assert world.status["lastScheduleTime"] == _stamp(due)
        assert world.status["lastTrigger"] == {
            "type": "cron",
            "time": _stamp(world.now),
            "value": _stamp(due),
            "run": world.made[0],
        }
        assert world.reasons() == [reasons.RUN_TRIGGERED]


def test_cron_fires_once_per_time_across_many_ticks() -> None:
    world = World(spec(schedule="*/10 * * * *"), outcome="Succeeded")
    world.run_for(timedelta(minutes=35))  # 09:10, 09:20, 09:30
    assert world.made == [f"{NAME}-cron-{minute(T0.replace(minute=m, second=0))}" for m in (10, 20, 30)]
    assert world.status["nextScheduleTime"] == "2026-11-22T09:40:00Z"


def test_catch_up_after_downtime_fires_once_for_the_latest_missed_time() -> None:
    world = World(spec(schedule="0 * * * *"), outcome="Succeeded")
    world.tick(timedelta(minutes=1))
    world.tick(timedelta(hours=5))  # the operator was away from 09:01:40 to 14:01:40: 10:00 .. 14:00 missed
    assert world.made == [f"{NAME}-cron-{minute(datetime(2026, 11, 22, 14, 0, tzinfo=UTC))}"]
    world.run_for(timedelta(minutes=50))
    assert len(world.made) == 1


def test_invalid_cron_is_a_false_ready_condition_and_one_warning() -> None:
    world = World(spec(schedule="61 * * * *"))  # the schema's pattern lets it through; cron does not
    world.run_for(timedelta(minutes=3))
    assert world.made == []
    assert world.cond("Ready") == ("False", reasons.INVALID_SCHEDULE)
    assert world.reasons() == [reasons.INVALID_SCHEDULE]


@pytest.mark.parametrize(
    ("expression", "valid"),
    [("*/5 * * * *", True), ("@daily", True), ("0 3 * * MON", True), ("61 * * * *", False), ("* * * * * *", False)],
)
def test_valid_cron(expression: str, valid: bool) -> None:
    assert valid_cron(expression) is valid


# -- drift ------------------------------------------------------------------------------------------


def drift_world(**drift: Any) -> World:
    return World(spec(drift={"threshold": 0.2, "for": "5m", **drift}))


def test_drift_held_long_enough_fires_once_named_after_the_start_of_the_hold() -> None:
    world = drift_world()
    world.drift = DriftReading(0.35)
    first = world.tick()
    start = world.now
    assert first.create is None
    assert world.status["driftSince"] == _stamp(start)
    assert world.cond("Drifting") == ("True", reasons.DRIFT_ABOVE_THRESHOLD)
    world.run_for(timedelta(minutes=4, seconds=50))
    assert world.made == []
    world.tick()  # 5 minutes after the hold began
    assert world.made == [f"{NAME}-drift-{minute(start)}"]
    assert world.status["lastTrigger"]["type"] == "drift" and world.status["lastTrigger"]["value"] == "0.35"
    assert "driftSince" not in world.status  # used up: it must hold again to fire again


def test_drift_not_held_long_enough_never_fires() -> None:
    world = drift_world()
    for _ in range(5):
        world.drift = DriftReading(0.5)
        world.run_for(timedelta(minutes=4))
        world.drift = DriftReading(0.1)  # back under: the hold starts over
        world.tick()
        assert world.cond("Drifting") == ("False", reasons.DRIFT_WITHIN_THRESHOLD)
    assert world.made == []


def test_value_equal_to_the_threshold_is_not_drift() -> None:
    world = drift_world(**{"for": "0s"})
    world.drift = DriftReading(0.2)
    world.run_for(timedelta(minutes=2))
    assert world.made == []


@pytest.mark.parametrize(
    "reading",
    [
        DriftReading(None, "query failed: ConnectionError: refused"),
        DriftReading(None, "no data (no series, or no traffic in the window)"),
        DriftReading(float("nan")),
        None,  # not measured at all
    ],
)
def test_unreachable_prometheus_or_no_data_is_unknown_and_never_fires(reading: DriftReading | None) -> None:
    world = drift_world(**{"for": "0s"})
    world.drift = DriftReading(0.9)
    world.tick()  # the hold begins
    world.drift = reading
    world.run_for(timedelta(minutes=10))
    assert world.made == []
    assert world.cond("Drifting") == ("Unknown", reasons.DRIFT_UNKNOWN)
    assert "driftSince" not in world.status  # the hold starts over once there is data again


def test_a_gap_in_the_data_restarts_the_hold() -> None:
    world = drift_world()
    world.drift = DriftReading(0.5)
    world.run_for(timedelta(minutes=4))
    world.drift = DriftReading(None, "query failed")
    world.tick()
    world.drift = DriftReading(0.5)
    world.run_for(timedelta(minutes=4))
    assert world.made == []
    world.run_for(timedelta(minutes=2))
    assert len(world.made) == 1


def test_a_zero_hold_fires_on_the_tick_after_the_start_is_recorded() -> None:
    world = drift_world(**{"for": "0s"})
    world.drift = DriftReading(0.5)
    assert world.tick().create is None  # the start goes to status first, so the run's name is stable
    start = world.now
    assert world.tick().create is not None
    assert world.made == [f"{NAME}-drift-{minute(start)}"]


def test_drift_configured_away_clears_its_condition() -> None:
    world = drift_world()
    world.drift = DriftReading(0.5)
    world.tick()
    world.spec = spec()
    world.tick()
    assert world.cond("Drifting") is None and "driftSince" not in world.status


def test_built_in_and_custom_drift_queries() -> None:
    assert drift_query("ml", "churn", None) == 'max(slipway_input_psi{namespace="ml",model="churn"})'
    custom = 'sum(rate(errors{namespace="{{namespace}}",model="{{model}}"}[5m]))'
    assert drift_query("ml", "churn", custom) == 'sum(rate(errors{namespace="ml",model="churn"}[5m]))'


# -- manual -----------------------------------------------------------------------------------------


def test_manual_request_is_consumed_once() -> None:
    world = World(spec())
    world.request = "20261122T090100Z-abcd1234"
    world.tick()
    world.run_for(timedelta(minutes=5))
    assert world.made == [run_name(NAME, "manual", "20261122T090100Z-abcd1234")]
    assert world.status["lastManualRequest"] == world.request
    assert len(world.made[0]) <= 63
    world.finish(world.made[0], "Succeeded", "churn-v4")
    world.request = "20261122T091000Z-ffff0000"  # a new id is a new request
    world.tick()
    assert len(world.made) == 2 and world.made[1].startswith(f"{NAME}-manual-")


def test_manual_request_ignores_the_cooldown() -> None:
    world = World(spec(schedule="*/5 * * * *", cooldown="1h"))
    world.run_for(timedelta(minutes=5))
    assert len(world.made) == 1
    world.finish(world.made[0], "Succeeded")
    world.request = "r1"
    world.tick()
    assert len(world.made) == 2


def test_restarted_operator_does_not_make_a_second_run_for_the_same_trigger() -> None:
    """The run was made but its status write was lost: the next tick names the same run (409)."""
    world = World(spec(schedule="*/5 * * * *"))
    world.request = "r1"
    before = dict(world.status)
    world.tick()
    made = world.made[0]
    world.status = before  # the status patch never made it
    world.tick()
    assert world.made == [made] and len(world.runs) == 1
    assert world.status["lastManualRequest"] == "r1" and world.status["lastTrigger"]["run"] == made


# -- cooldown, concurrency, suspend -----------------------------------------------------------------


def test_cooldown_holds_across_restarts_because_it_is_in_status() -> None:
    world = World(spec(schedule="*/10 * * * *", cooldown="25m"))
    world.run_for(timedelta(minutes=10))  # 09:10 fires
    world.finish(world.made[0], "Succeeded")
    world.run_for(timedelta(minutes=25))  # 09:20 and 09:30 fall in the cooldown
    assert len(world.made) == 1
    assert world.reasons().count(reasons.SKIPPED_COOLDOWN) == 2
    assert "cooldown 25m" in dict((r, m) for r, m in world.events)[reasons.SKIPPED_COOLDOWN]
    world.run_for(timedelta(minutes=10))  # 09:40 is 30 minutes after the first run
    assert len(world.made) == 2


def test_drift_held_in_cooldown_waits_and_says_so_once() -> None:
    world = World(spec(cooldown="30m", drift={"threshold": 0.2, "for": "1m"}))
    world.drift = DriftReading(0.1)
    world.request = "r1"
    world.tick()  # 09:00:40: a manual run; the cooldown lasts until 09:30:40
    world.finish(world.made[0], "Succeeded")
    world.drift = DriftReading(0.4)
    world.run_for(timedelta(minutes=29, seconds=50))
    assert len(world.made) == 1
    assert [r for r, m in world.events if m.startswith("drift")] == [reasons.SKIPPED_COOLDOWN]  # once, not per tick
    world.tick()  # 09:30:40: drift still holds
    assert len(world.made) == 2 and world.made[1].startswith(f"{NAME}-drift-")


@pytest.mark.parametrize(
    ("policy", "made", "deleted", "reason"),
    [
        ("Forbid", 1, [], reasons.SKIPPED_RUN_ACTIVE),
        ("Replace", 2, ["first"], reasons.RUN_REPLACED),
    ],
)
def test_forbid_and_replace_with_an_active_run(policy: str, made: int, deleted: list[str], reason: str) -> None:
    world = World(spec(schedule="*/5 * * * *", concurrencyPolicy=policy))
    world.run_for(timedelta(minutes=5))
    first = world.made[0]
    world.runs[first] = world.runs[first]._replace(phase="Running")
    world.run_for(timedelta(minutes=5))
    assert len(world.made) == made
    assert world.deleted == [first if d == "first" else d for d in deleted]
    assert reason in world.reasons()
    assert world.status["activeRuns"] == [world.made[-1]]
    assert world.status["lastScheduleTime"] == "2026-11-22T09:10:00Z"  # consumed either way


def test_forbid_with_a_manual_request_consumes_it_with_an_event() -> None:
    world = World(spec())
    world.request = "r1"
    world.tick()
    world.runs[world.made[0]] = world.runs[world.made[0]]._replace(phase="Running")
    world.request = "r2"
    world.tick()
    world.tick()
    assert len(world.made) == 1
    assert world.reasons().count(reasons.SKIPPED_RUN_ACTIVE) == 1
    assert world.status["lastManualRequest"] == "r2"


def test_a_run_just_made_counts_as_active_before_it_is_seen() -> None:
    world = World(spec(schedule="* * * * *"))
    world.request = "r1"
    world.tick()
    world.runs.clear()  # the operator's view of runs lags behind
    world.tick(timedelta(seconds=50))  # 09:01 is due
    assert len(world.made) == 1 and reasons.SKIPPED_RUN_ACTIVE in world.reasons()
    world.tick(timedelta(seconds=CREATE_GRACE_SECONDS))  # a run never seen for a minute is gone
    world.tick(timedelta(seconds=60))
    assert len(world.made) == 2


def test_suspend_skips_every_trigger_with_an_event_and_consumes_it() -> None:
    world = World(spec(schedule="*/5 * * * *", suspend=True, drift={"threshold": 0.2, "for": "0s"}))
    world.request = "r1"
    world.drift = DriftReading(0.9)
    world.run_for(timedelta(minutes=11))
    assert world.made == []
    assert world.cond("Ready") == ("False", reasons.SUSPENDED)
    skipped = [m.split(" ")[0] for r, m in world.events if r == reasons.SKIPPED_SUSPENDED]
    assert sorted(skipped) == ["cron", "cron", "drift", "manual"]  # drift: once per hold, not per tick
    world.spec = spec(schedule="*/5 * * * *", drift={"threshold": 0.2, "for": "0s"})
    world.tick()  # resumed: drift still holds, the missed cron times are not caught up
    assert len(world.made) == 1 and world.made[0].startswith(f"{NAME}-drift-")
    assert world.cond("Ready") == ("True", reasons.SCHEDULE_ACTIVE)


def test_one_run_per_tick_and_the_rest_looked_at_next_tick() -> None:
    world = World(spec(schedule="*/5 * * * *"))
    world.request = "r1"
    world.tick(timedelta(minutes=5))  # manual and cron due together
    assert len(world.made) == 1 and world.made[0].startswith(f"{NAME}-manual-")
    world.tick()
    assert len(world.made) == 1 and reasons.SKIPPED_RUN_ACTIVE in world.reasons()  # Forbid


# -- history and the last success -------------------------------------------------------------------


def test_history_pruning_keeps_the_newest_of_each_outcome() -> None:
    world = World(spec(schedule="* * * * *", successfulRunsHistoryLimit=2, failedRunsHistoryLimit=1))
    outcomes = ["Succeeded", "Failed", "Succeeded", "Failed", "Succeeded", "Succeeded"]
    for index, outcome in enumerate(outcomes):
        world.tick(timedelta(seconds=60))
        world.finish(world.made[-1], outcome, f"churn-v{index + 1}" if outcome == "Succeeded" else None)
    world.tick(timedelta(seconds=1))
    succeeded = [n for n, o in zip(world.made, outcomes, strict=True) if o == "Succeeded"]
    failed = [n for n, o in zip(world.made, outcomes, strict=True) if o == "Failed"]
    assert set(world.runs) == {*succeeded[-2:], failed[-1]}
    assert set(world.deleted) == {*succeeded[:-2], *failed[:-1]}
    assert reasons.RUNS_PRUNED in world.reasons()
    assert world.status["lastSuccessfulRun"]["name"] == succeeded[-1]
    assert world.status["lastSuccessfulRun"]["modelVersion"] == "churn-v6"
    assert world.status["activeRuns"] == []


def test_zero_history_deletes_finished_runs_but_remembers_the_last_success() -> None:
    world = World(spec(successfulRunsHistoryLimit=0))
    world.request = "r1"
    world.tick()
    world.finish(world.made[0], "Succeeded", "churn-v1")
    world.tick()
    world.tick()
    assert world.runs == {} and world.deleted == [world.made[0]]
    assert world.status["lastSuccessfulRun"]["modelVersion"] == "churn-v1"


# -- names, the run, the schema ---------------------------------------------------------------------


def test_run_names_are_deterministic_and_fit() -> None:
    long = "s" * 47
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert run_name(long, "cron", at) == run_name(long, "cron", at)
    for name in (run_name(long, "cron", at), run_name(long, "drift", at), run_name(long, "manual", "x" * 200)):
        assert len(name) <= 63


def test_the_run_is_the_template_with_the_schedule_and_trigger_labels() -> None:
    world = World(spec(schedule="*/5 * * * *"))
    world.tick(timedelta(minutes=5))
    assert world.last is not None and world.last.create is not None
    run = build_scheduled_run(NAME, "ml", spec().template, world.last.create.trigger)
    assert run["metadata"]["name"] == world.made[0]
    assert run["metadata"]["labels"]["slipway.dev/training-schedule"] == NAME
    assert run["metadata"]["labels"]["slipway.dev/trigger"] == "cron"
    assert run["spec"]["model"] == "churn" and run["spec"]["scaling"]["workers"] == 1


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"concurrencyPolicy": "Allow"}, "concurrencyPolicy"),
        ({"successfulRunsHistoryLimit": -1}, "successfulRunsHistoryLimit"),
        ({"schedule": "every day"}, "schedule"),
    ],
)
def test_pydantic_refuses_what_the_schema_refuses(fields: dict[str, Any], where: str) -> None:
    """Duration and threshold rules are CEL, checked by the API server (tests/integration/test_schema.py)."""
    body = {"template": TEMPLATE, **fields}
    with pytest.raises(ValidationError) as error:
        TrainingScheduleSpec.model_validate(body)
    assert where in str(error.value)


def test_the_example_is_a_valid_schedule() -> None:
    example = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "trainingschedule.yaml").read_text())
    parsed = TrainingScheduleSpec.model_validate(example["spec"])
    assert parsed.schedule is not None and valid_cron(parsed.schedule)
    assert len(example["metadata"]["name"]) <= SCHEDULE_NAME_LIMIT


def test_kubectl_slipway_retrain_sets_a_fresh_request_id() -> None:
    first, second = (request_patch("retrain")["metadata"]["annotations"] for _ in range(2))
    assert set(first) == {RETRAIN_ANNOTATION} and first != second


def test_an_unreachable_prometheus_is_no_value_with_the_reason() -> None:
    value, problem = value_of("http://127.0.0.1:1", drift_query("ml", "churn", None))  # nothing listens on port 1
    assert value is None and problem.startswith("query failed:")
