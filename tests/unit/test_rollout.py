"""The rollout engine driven through time against a simulated cluster.

`World` plays the cluster: which endpoints are ready, which weights the gateway has applied (the
last Decision's, one tick later, while the gateway is up), the measurement taken whenever
`analysis_due` says so (Passed, Failed or Inconclusive, as the scenario injects), the user's
annotations, and a clock. Every tick it also runs a twin chain whose status goes through JSON
between ticks (an operator restart at every step) and checks both agree, and it checks the traffic
invariants on every Decision.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from slipway.api.modeldeployment import (
    AnalysisMetric,
    AnalysisResult,
    DeploymentPhase,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
from slipway.api.resources import PAUSED_ANNOTATION, ROLLOUT_REQUEST_PREFIX
from slipway.reconcile import reasons
from slipway.reconcile.analysis import judge
from slipway.reconcile.conditions import condition
from slipway.reconcile.rollout import (
    DRAIN_SECONDS,
    HISTORY_LIMIT,
    Commands,
    Decision,
    Endpoint,
    Event,
    Observation,
    Traffic,
    advance,
    analysis_due,
    analysis_of,
    commands_from,
    needs_ticks,
    only_deadline_timed,
    progress_deadline,
    rfc3339,
    traffic_of,
)

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
PHASES = set(get_args(DeploymentPhase))
METRICS: list[dict[str, Any]] = [{"name": "error-rate", "max": 0.01}, {"name": "latency-p95", "max": 0.2}]

Verdicts = str | Mapping[str, str]


# -- specs ------------------------------------------------------------------------------------------
def spec_of(strategy: dict[str, Any], **extra: Any) -> ModelDeploymentSpec:
    body = {"model": "churn", "predictor": {"image": "predictor:1"}, "strategy": strategy, **extra}
    return ModelDeploymentSpec.model_validate(body)


def canary(
    *steps: tuple[int, str],
    interval: str = "30s",
    failure_limit: int = 1,
    metrics: list[dict[str, Any]] | None = None,
    deadline: str = "600s",
    shadow: dict[str, Any] | None = None,
) -> ModelDeploymentSpec:
    steps = steps or ((10, "60s"), (50, "120s"))
    analysis = {"interval": interval, "failureLimit": failure_limit, "metrics": METRICS if metrics is None else metrics}
    settings: dict[str, Any] = {"steps": [{"weight": w, "pause": p} for w, p in steps], "analysis": analysis}
    if shadow is not None:
        settings["shadow"] = shadow
    return spec_of({"type": "Canary", "progressDeadline": deadline, "canary": settings})


def blue_green(
    preview: int = 0,
    auto: bool = True,
    delay: str = "300s",
    interval: str = "30s",
    failure_limit: int = 1,
    metrics: list[dict[str, Any]] | None = None,
    shadow: dict[str, Any] | None = None,
) -> ModelDeploymentSpec:
    analysis = {"interval": interval, "failureLimit": failure_limit, "metrics": METRICS if metrics is None else metrics}
    settings = {"previewWeight": preview, "autoPromote": auto, "scaleDownDelay": delay, "analysis": analysis}
    if shadow is not None:
        settings["shadow"] = shadow
    return spec_of({"type": "BlueGreen", "blueGreen": settings})


def direct(deadline: str = "600s") -> ModelDeploymentSpec:
    return spec_of({"type": "Direct", "progressDeadline": deadline})


# -- measurements -------------------------------------------------------------------------------------
def value_for(metric: AnalysisMetric, verdict: str) -> float | None:
    if verdict == "Inconclusive":
        return None
    if verdict == "Passed":
        if metric.min is not None and metric.max is not None:
            return (metric.min + metric.max) / 2
        return metric.max / 2 if metric.max is not None else (metric.min or 0) + 1
    return metric.max + 1 if metric.max is not None else (metric.min or 0) - 1


def measurement(spec: ModelDeploymentSpec, verdicts: Verdicts, stamp: str) -> list[AnalysisResult]:
    """What the handler's `measure` returns: one judged result per metric."""
    analysis = analysis_of(spec)
    assert analysis is not None
    results = []
    for metric in analysis.metrics:
        verdict = verdicts if isinstance(verdicts, str) else verdicts.get(metric.name, "Passed")
        problem = "query failed: ConnectionError: connection refused" if verdict == "Inconclusive" else ""
        results.append(judge(metric, value_for(metric, verdict), problem, stamp))
    return results


def dump(status: ModelDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def through_json(status: ModelDeploymentStatus) -> ModelDeploymentStatus:
    """What an operator restart sees: the status as the API server stored it."""
    text = json.dumps(status.model_dump(by_alias=True, exclude_none=True))
    return ModelDeploymentStatus.model_validate(json.loads(text))


# -- the simulated cluster ------------------------------------------------------------------------------
@dataclass
class World:
    spec: ModelDeploymentSpec
    target: int | None = 1
    generation: int = 1
    now: datetime = T0
    ready: set[int] = field(default_factory=set)  # versions whose endpoint is ready
    gateway_up: bool = True  # applies the last Decision's weights (seen on the next tick)
    verdict: Verdicts | Callable[[World], Verdicts] = "Passed"
    commands: Commands = field(default_factory=Commands)
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    restored: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)  # restarted every tick
    applied: dict[int, int] | None = None
    mirrored: dict[int, int] = field(default_factory=dict)  # the mirror the gateway applied, with `applied`
    traffic: Traffic | None = None
    user_weight_during_shadow: bool = False  # the candidate ever had user traffic in its shadow stage
    ever_ready: set[int] = field(default_factory=set)
    measured: list[datetime] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)  # phase changes, in order
    decisions: int = 0
    observed: Observation | None = None  # the last tick's observation
    quiet_waits: int = 0  # ticks that only waited for a candidate, with nothing new observed

    @property
    def st(self) -> ModelDeploymentStatus:
        return self.status

    def weights(self) -> dict[int, int]:
        return self.traffic.weights() if self.traffic else {}

    def tick(self, dt: float = 1) -> Decision:
        self.now += timedelta(seconds=dt)
        in_play = set(self.weights()) | self.ready
        endpoints = {v: Endpoint(v in self.ready, "" if v in self.ready else "container starting") for v in in_play}
        self.ever_ready |= self.ready
        analysis = None
        due = analysis_due(self.spec, self.status, self.now)
        assert due == analysis_due(self.spec, self.restored, self.now)
        if due:
            verdicts = self.verdict(self) if callable(self.verdict) else self.verdict
            analysis = measurement(self.spec, verdicts, rfc3339(self.now))
            self.measured.append(self.now)
        applied = None if self.applied is None else dict(self.applied)
        observation = Observation(self.target, endpoints, applied, analysis, self.commands, dict(self.mirrored))
        before = dump(self.status)
        decision = advance(self.spec, self.generation, self.status, observation, self.now)
        assert dump(self.status) == before, "advance must not change the status it was given"
        if (
            only_deadline_timed(self.status)
            and observation == self.observed
            and self.now < progress_deadline(self.spec, self.status, self.now)
        ):  # the operator then looks only every few seconds, and only at the deadline (watch_deadline)
            assert dump(decision.status) == before and decision.traffic == self.traffic, "time alone moved it"
            self.quiet_waits += 1
        self.observed = observation
        twin = advance(self.spec, self.generation, self.restored, observation, self.now)
        assert dump(twin.status) == dump(decision.status), "a restart changed the outcome"
        assert (twin.traffic, twin.events) == (decision.traffic, decision.events)
        check_invariants(self, decision)
        self.status, self.restored, self.traffic = decision.status, through_json(twin.status), decision.traffic
        if self.gateway_up:
            self.applied = decision.traffic.weights()
            traffic = decision.traffic
            self.mirrored = {traffic.candidate: traffic.mirror} if traffic.mirror and traffic.candidate else {}
        if decision.status.shadow_percent is not None and decision.traffic.candidate is not None:
            self.user_weight_during_shadow |= self.weights().get(decision.traffic.candidate, 0) > 0
        self.events += decision.events
        if not self.phases or self.phases[-1] != decision.status.phase:
            self.phases.append(decision.status.phase)
        self.decisions += 1
        return decision

    def wait(self, seconds: float, dt: float = 1) -> None:
        for _ in range(round(seconds / dt)):
            self.tick(dt)

    def until(self, done: Callable[[World], bool], limit: float = 3600, dt: float = 1) -> float:
        """Tick until `done`; the seconds it took."""
        start = self.now
        while not done(self):
            assert (self.now - start).total_seconds() < limit, f"stuck: {self.st.phase} {self.st.message}"
            self.tick(dt)
        return (self.now - start).total_seconds()

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    def forget(self) -> None:
        self.events.clear()
        self.measured.clear()
        self.phases = [self.st.phase]

    def phase_is(self, phase: str) -> Callable[[World], bool]:
        return lambda w: w.st.phase == phase


def check_invariants(world: World, decision: Decision) -> None:
    """Checked after every tick of every scenario."""
    st, traffic = decision.status, decision.traffic
    assert st.phase in PHASES
    assert traffic == traffic_of(st)
    weights = traffic.weights()
    assert all(0 <= w <= 100 for w in weights.values()), weights
    serving = traffic.stable is not None or traffic.candidate is not None
    assert sum(weights.values()) == (100 if serving else 0), weights
    if traffic.candidate is not None and traffic.stable is not None and weights[traffic.candidate] > 0:
        # With something else serving, a candidate gets traffic only once its endpoint was ready.
        # (A first version is the only version: the route points at it from the start.)
        assert traffic.candidate in world.ever_ready, f"traffic on unready version {traffic.candidate}"
    if st.rolled_back_version is not None:
        assert weights.get(st.rolled_back_version, 0) == 0
    if st.shadow_percent is not None:  # the shadow stage: no user traffic on the candidate
        assert st.candidate_version is not None and st.stable_version is not None
        assert weights[st.candidate_version] == 0 and traffic.mirror == st.shadow_percent
    if traffic.mirror:
        # Mirrored traffic too goes only to a candidate that was ready, beside a stable version.
        assert traffic.candidate in world.ever_ready and traffic.stable is not None
        assert 1 <= traffic.mirror <= 100 and weights[traffic.candidate] == 0
    else:
        assert not st.shadow_percent
    assert st.stable_version is None or st.stable_version != st.candidate_version
    if st.phase in ("Progressing", "Paused"):
        assert st.candidate_version is not None
    else:
        assert st.candidate_version is None and st.canary_weight == 0
    if st.phase == "Stable":
        assert st.stable_version in world.ever_ready, "Stable before the version was ever ready"
    ready = condition(st.conditions, "Ready")
    progressing = condition(st.conditions, "Progressing")
    assert ready is not None and progressing is not None
    assert progressing.status == ("True" if st.phase in ("Progressing", "Paused", "RollingBack") else "False")
    assert st.observed_generation == world.generation
    if st.step is not None:
        assert st.candidate_version is not None
    assert (st.previous_version is None) == (st.scale_down_at is None)
    assert (st.rolled_back_version is None) == (st.rolled_back_generation is None)
    assert {h.outcome for h in st.history} <= {"Promoted", "RolledBack", "Superseded", "Cancelled"}
    assert len(st.history) <= HISTORY_LIMIT


def serving(spec: ModelDeploymentSpec, version: int = 1, **kwargs: Any) -> World:
    """A world where `version` is the stable version, and nothing else is going on."""
    world = World(spec, target=version, ready={version}, **kwargs)
    world.until(lambda w: w.st.phase == "Stable" and w.st.previous_version is None)
    world.wait(2)
    world.forget()
    return world


def promoted(version: int) -> Callable[[World], bool]:
    return lambda w: w.st.phase == "Stable" and w.st.stable_version == version


# == first version =====================================================================================
@pytest.mark.parametrize("spec", [canary(), blue_green(), direct()], ids=["Canary", "BlueGreen", "Direct"])
def test_first_version_deploys_directly_and_is_stable_only_once_ready_and_routed(spec: ModelDeploymentSpec) -> None:
    world = World(spec, target=1, gateway_up=False)
    first = world.tick()
    assert first.status.phase == "Progressing" and first.status.candidate_version == 1
    assert first.status.canary_weight == 100 and first.status.step is None  # Direct: no steps
    assert [e.reason for e in first.events] == [reasons.ROLLOUT_STARTED]
    assert "Direct" in first.events[0].message
    world.wait(60)
    assert world.st.phase == "Progressing" and world.st.reason == reasons.WAITING_FOR_CANDIDATE
    assert "container starting" in world.st.message
    assert world.quiet_waits >= 58  # time alone changed nothing while it waited (World.tick checks)
    ready = condition(world.st.conditions, "Ready")
    assert ready is not None and ready.status == "False"
    world.ready.add(1)  # ready, but the gateway has not applied the route
    world.wait(30)
    assert world.st.phase == "Progressing" and world.st.reason == reasons.ROLLING_OUT
    assert not analysis_due(spec, world.st, world.now)
    world.gateway_up = True
    world.tick()  # the gateway applies {1: 100} now; the engine sees it on the next tick
    assert world.st.phase == "Progressing"
    world.tick()
    st = world.st
    assert (st.phase, st.stable_version, st.candidate_version, st.reason) == ("Stable", 1, None, reasons.PROMOTED)
    assert [(h.version, h.outcome, h.reason) for h in st.history] == [(1, "Promoted", "first version")]
    assert st.previous_version is None and world.traffic == Traffic(1, None, 0, ())
    ready = condition(st.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("True", reasons.ENDPOINT_READY)
    assert not needs_ticks(st)
    assert world.reasons() == [reasons.ROLLOUT_STARTED, reasons.PROMOTED]
    assert world.measured == []
    world.wait(30)
    assert world.reasons() == [reasons.ROLLOUT_STARTED, reasons.PROMOTED]  # nothing more happens


@pytest.mark.parametrize(
    ("ready", "routed", "phase"),
    [(False, False, "Progressing"), (False, True, "Progressing"), (True, False, "Progressing"), (True, True, "Stable")],
)
def test_first_version_needs_both_a_ready_endpoint_and_the_route(ready: bool, routed: bool, phase: str) -> None:
    status = advance(direct(), 1, ModelDeploymentStatus(), Observation(1, {}, None), T0).status
    endpoints = {1: Endpoint(ready, "" if ready else "starting")}
    decision = advance(direct(), 1, status, Observation(1, endpoints, {1: 100} if routed else None), T0)
    assert decision.status.phase == phase


def test_ready_condition_follows_the_stable_endpoint() -> None:
    world = serving(direct())
    world.ready.discard(1)
    world.tick()
    ready = condition(world.st.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", reasons.ENDPOINT_NOT_READY)
    assert world.st.phase == "Stable"  # still what it serves; readiness is the Ready condition's business
    world.ready.add(1)
    world.tick()
    ready = condition(world.st.conditions, "Ready")
    assert ready is not None and ready.status == "True"


@pytest.mark.parametrize(("strategy", "final"), [("first", "Failed"), ("stable", "Degraded")])
def test_progress_deadline_ends_a_candidate_that_never_becomes_ready(strategy: str, final: str) -> None:
    spec = canary(deadline="120s") if strategy == "stable" else direct(deadline="120s")
    world = serving(spec) if strategy == "stable" else World(spec, target=None)
    world.target = 2
    world.tick()
    started = world.now
    world.wait(119)
    assert world.st.phase == "Progressing" and world.st.candidate_version == 2
    world.tick()
    assert world.now == started + timedelta(seconds=120)
    st = world.st
    assert st.phase == ("Failed" if final == "Failed" else "RollingBack")
    assert st.reason == reasons.PROGRESS_DEADLINE_EXCEEDED
    assert "did not become ready within 120s" in st.message and "container starting" in st.message
    assert st.history[-1].version == 2 and st.history[-1].outcome == "RolledBack"
    assert st.rolled_back_version == 2 and world.traffic is not None and world.traffic.warm == (2,)
    assert world.events[-1].warning and world.events[-1].reason == reasons.PROGRESS_DEADLINE_EXCEEDED
    world.wait(5)
    assert world.st.phase == final
    if final == "Failed":
        assert world.weights() == {2: 0}  # nothing serves
        assert "nothing is serving" in world.st.message
    else:
        assert world.weights() == {1: 100, 2: 0}
    world.ready.add(2)  # too late: not retried for this generation
    world.wait(300)
    assert world.st.phase == final and world.st.candidate_version is None
    world.generation += 1
    world.until(promoted(2))
    assert world.st.stable_version == 2


def test_candidate_ready_just_before_the_deadline_is_not_rolled_back() -> None:
    world = serving(canary(deadline="120s"))
    world.target = 2
    world.tick()
    world.wait(118)
    world.ready.add(2)
    world.wait(10)
    assert world.st.phase == "Progressing" and world.st.candidate_version == 2 and world.st.canary_weight == 10


# == Direct with a stable version =========================================================================
def test_direct_switches_at_once_when_ready_and_never_before() -> None:
    world = serving(direct())
    world.target = 2
    world.wait(30)
    assert world.st.candidate_version == 2 and world.st.phase == "Progressing"
    assert world.weights() == {1: 100, 2: 0}, "all traffic stays on the stable version until 2 is ready"
    world.ready.add(2)
    world.tick()
    assert world.weights() == {1: 0, 2: 100} and world.st.phase == "Progressing"
    world.tick()
    st = world.st
    assert (st.phase, st.stable_version, st.previous_version) == ("Stable", 2, 1)
    assert st.history[-1].reason == "replaced at once (Direct)"
    assert st.scale_down_at == rfc3339(world.now + timedelta(seconds=DRAIN_SECONDS))
    assert world.weights() == {2: 100, 1: 0}  # drained, not cut
    assert needs_ticks(st) and world.measured == []
    world.wait(DRAIN_SECONDS - 1)
    assert world.st.previous_version == 1
    world.tick()
    assert world.st.previous_version is None and world.st.scale_down_at is None
    assert world.weights() == {2: 100} and not needs_ticks(world.st)


# == Canary ================================================================================================
def test_canary_walks_its_steps_on_passing_analysis_and_promotes() -> None:
    world = serving(canary((10, "60s"), (50, "120s")))
    world.target = 2
    world.tick()
    assert world.st.step == 0 and world.st.canary_weight == 0 and world.weights() == {1: 100, 2: 0}
    world.wait(5)
    world.ready.add(2)
    world.tick()  # ready: the engine asks for step 1's weight
    assert world.st.canary_weight == 10 and world.weights() == {1: 90, 2: 10}
    assert world.st.step_started_at is None and "setting 10%" in world.st.message
    world.tick()  # the gateway applied it: the step starts now
    step0 = world.now
    assert world.st.step_started_at == rfc3339(step0)
    assert "step 1/2" in world.st.message and "pausing 60s more" in world.st.message
    world.until(lambda w: w.st.step == 1)
    assert world.measured == [step0 + timedelta(seconds=30), step0 + timedelta(seconds=60)]
    assert world.now == step0 + timedelta(seconds=60)
    assert world.st.canary_weight == 50 and world.weights() == {1: 50, 2: 50}
    assert world.reasons()[-1] == reasons.STEP_ADVANCED
    world.tick()
    step1 = world.now
    assert world.st.step_started_at == rfc3339(step1)
    world.until(promoted(2))
    assert world.now == step1 + timedelta(seconds=120)
    assert world.measured[2:] == [step1 + timedelta(seconds=s) for s in (30, 60, 90, 120)]
    st = world.st
    assert (st.stable_version, st.candidate_version, st.previous_version, st.step) == (2, None, 1, None)
    assert st.history[-1].outcome == "Promoted" and st.history[-1].reason == "passed every step"
    assert world.weights() == {2: 100, 1: 0}
    assert st.scale_down_at == rfc3339(world.now + timedelta(seconds=DRAIN_SECONDS))
    assert st.analysis_failures == 0 and st.analysis_inconclusive == 0
    analysis = condition(st.conditions, "Analysis")
    assert analysis is not None and (analysis.status, analysis.reason) == ("True", "AnalysisPassed")
    world.wait(DRAIN_SECONDS)
    assert world.weights() == {2: 100} and world.st.previous_version is None
    assert world.reasons() == [
        reasons.ROLLOUT_STARTED,
        reasons.STEP_ADVANCED,
        reasons.PROMOTED,
    ]
    assert world.phases == ["Stable", "Progressing", "Stable"]


def test_the_pause_starts_only_once_the_weight_is_in_effect() -> None:
    world = serving(canary((10, "60s"), (50, "60s")))
    world.target, world.gateway_up = 2, False
    world.ready.add(2)
    world.wait(200)
    assert world.st.canary_weight == 10 and world.st.step_started_at is None
    assert world.measured == [] and world.st.step == 0
    assert world.st.reason == reasons.ROLLING_OUT and "setting 10%" in world.st.message
    world.gateway_up = True
    world.tick()
    world.tick()
    assert world.st.step_started_at == rfc3339(world.now)
    world.wait(59)
    assert world.st.step == 0
    world.tick()
    assert world.st.step == 1


def test_a_gateway_that_stops_applying_holds_the_next_step() -> None:
    world = serving(canary((10, "30s"), (50, "30s")))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.gateway_up = False  # the route with 50% is never accepted
    world.wait(300)
    assert world.st.step == 1 and world.st.step_started_at is None
    assert world.st.phase == "Progressing" and world.st.stable_version == 1


def test_a_candidate_that_stops_being_ready_mid_step_restarts_the_step() -> None:
    """No measurement is due (nor thrown away every tick) while the candidate is down, and its
    share of the traffic goes back to stable: requests routed to it would fail."""
    world = serving(canary((10, "60s"), (50, "60s"), deadline="600s"))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.wait(45)
    assert len(world.measured) == 1
    world.ready.discard(2)
    world.wait(100)
    st = world.st
    assert (st.phase, st.reason, st.step, st.step_started_at) == ("Progressing", reasons.WAITING_FOR_CANDIDATE, 0, None)
    assert st.canary_weight == 0 and traffic_of(st).weights() == {1: 100, 2: 0}
    assert len(world.measured) == 1
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)  # once its 10% is in effect again
    back = world.now
    assert world.st.step_started_at == rfc3339(back) and world.st.canary_weight == 10
    world.until(lambda w: w.st.step == 1)
    assert world.now == back + timedelta(seconds=60)
    assert world.measured[1:] == [back + timedelta(seconds=30), back + timedelta(seconds=60)]


@pytest.mark.parametrize("route", [{1: 100}, None], ids=["reverted", "not-accepted"])
def test_a_weight_that_stops_being_in_effect_mid_step_restarts_the_step(route: dict[int, int] | None) -> None:
    world = serving(canary((10, "60s"), (50, "60s")))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.wait(45)
    world.gateway_up = False
    world.applied = route  # someone edited the route, or the gateway has not accepted it again yet
    world.wait(100)
    assert world.st.step_started_at is None and world.st.step == 0 and len(world.measured) == 1
    world.gateway_up = True
    world.tick()
    world.tick()
    back = world.now
    assert world.st.step_started_at == rfc3339(back)
    world.until(lambda w: w.st.step == 1)
    assert world.now == back + timedelta(seconds=60)


def test_a_measurement_is_due_every_interval_from_when_the_weight_took_effect() -> None:
    spec = canary((10, "300s"), interval="45s")
    world = serving(spec)
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    start = world.now
    assert not analysis_due(spec, world.st, start + timedelta(seconds=44))
    assert analysis_due(spec, world.st, start + timedelta(seconds=45))
    world.wait(300)
    assert world.measured == [start + timedelta(seconds=s) for s in range(45, 301, 45)]


@pytest.mark.parametrize("dt", [1, 7, 13])
def test_coarse_ticks_still_take_one_measurement_per_interval_and_promote(dt: int) -> None:
    world = serving(canary((10, "60s"), (50, "60s")))
    world.target = 2
    world.ready.add(2)
    world.until(promoted(2), dt=dt)
    gaps = [(b - a).total_seconds() for a, b in zip(world.measured, world.measured[1:], strict=False)]
    assert all(g >= 30 for g in gaps)
    assert world.st.stable_version == 2


def test_a_step_needs_a_passed_measurement_whose_window_lies_in_the_step() -> None:
    """A step with no pause still waits one interval; a pass from the previous step does not count."""
    world = serving(canary((10, "0s"), (50, "0s"), (80, "0s")))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    start = world.now
    world.until(lambda w: w.st.step == 1)
    assert world.now == start + timedelta(seconds=30)
    world.tick()
    step1 = world.now
    assert world.st.analysis and world.st.last_analysis_at is not None  # the old pass is still on record
    world.until(lambda w: w.st.step == 2)
    assert world.now == step1 + timedelta(seconds=30)


def test_a_step_waits_for_its_pause_even_when_analysis_passed_early() -> None:
    world = serving(canary((10, "100s"), (50, "0s"), interval="30s"))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    start = world.now
    world.until(lambda w: w.st.step == 1)
    # passes at 30, 60 and 90 do not end a 100s pause; once it is over, the pass at 90 (its window
    # within the step) lets the step advance
    assert world.now == start + timedelta(seconds=100)


def test_a_canary_without_metrics_advances_on_pauses_alone() -> None:
    spec = canary((10, "20s"), (40, "20s"), metrics=[])
    world = serving(spec)
    world.target = 2
    world.ready.add(2)
    world.until(promoted(2))
    assert world.measured == [] and world.st.stable_version == 2
    assert condition(world.st.conditions, "Analysis") is None


def test_a_last_step_of_100_percent_promotes_after_it() -> None:
    world = serving(canary((50, "10s"), (100, "10s")))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step == 1)
    world.tick()
    assert world.weights() == {1: 0, 2: 100}
    world.until(promoted(2))
    assert world.weights() == {2: 100, 1: 0}


# == failures ================================================================================================
@pytest.mark.parametrize("limit", [0, 1, 2])
def test_failure_limit_counts_failed_measurements_then_rolls_back(limit: int) -> None:
    world = serving(canary((10, "600s"), failure_limit=limit), verdict="Failed")
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    start = world.now
    for failures in range(1, limit + 1):
        world.until(lambda w, n=failures: w.st.analysis_failures == n)
        assert world.st.phase == "Progressing" and world.weights() == {1: 90, 2: 10}
    world.until(world.phase_is("RollingBack"))
    assert world.now == start + timedelta(seconds=30 * (limit + 1))
    st = world.st
    assert st.analysis_failures == limit + 1 and st.reason == reasons.ANALYSIS_FAILED
    assert world.weights() == {1: 100, 2: 0}  # the same tick
    assert world.reasons().count(reasons.ANALYSIS_FAILED) == limit + 2  # each measurement, and the rollback
    assert all(e.warning for e in world.events if e.reason == reasons.ANALYSIS_FAILED)
    world.tick()
    assert world.st.phase == "Degraded" and "has all traffic" in world.st.message
    assert world.phases == ["Stable", "Progressing", "RollingBack", "Degraded"]
    assert not needs_ticks(world.st)


def test_rollback_names_the_failing_metric_and_value() -> None:
    world = serving(canary(failure_limit=0), verdict={"latency-p95": "Failed"})
    world.target = 2
    world.ready.add(2)
    world.until(world.phase_is("RollingBack"))
    st = world.st
    assert "latency-p95 1.2 > max 0.2" in st.message and "error-rate" not in st.message
    assert st.history[-1].outcome == "RolledBack" and "latency-p95 1.2 > max 0.2" in st.history[-1].reason
    analysis = condition(st.conditions, "Analysis")
    assert analysis is not None and (analysis.status, analysis.reason) == ("False", "AnalysisFailed")
    assert "latency-p95=1.2 Failed" in analysis.message and "error-rate=0.005 Passed" in analysis.message
    warnings = [e for e in world.events if e.warning]
    assert warnings and all("latency-p95 1.2 > max 0.2" in e.message for e in warnings)
    assert st.analysis[1].metric == "latency-p95" and st.analysis[1].value == 1.2


def test_a_failure_then_a_pass_keeps_going_and_failures_count_over_the_whole_rollout() -> None:
    verdicts = iter(["Failed", "Passed", "Passed", "Passed", "Failed"])
    world = serving(canary((10, "60s"), (50, "120s"), failure_limit=1), verdict=lambda w: next(verdicts))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step == 1)
    assert world.st.analysis_failures == 1 and world.st.phase == "Progressing"
    world.until(world.phase_is("RollingBack"))  # the second failure, in step 2, ends it
    assert world.st.analysis_failures == 2 and len(world.measured) == 5


def test_a_rolled_back_version_is_kept_warm_and_not_retried_until_the_spec_changes() -> None:
    world = serving(canary(failure_limit=0), verdict="Failed")
    world.target = 2
    world.ready.add(2)
    world.until(world.phase_is("Degraded"))
    assert world.traffic == Traffic(1, None, 0, (2,))
    world.verdict = "Passed"
    world.forget()
    world.wait(900, dt=3)
    assert world.st.phase == "Degraded" and world.st.candidate_version is None
    assert world.events == [] and world.measured == []
    world.generation += 1  # e.g. a pause was edited: the spec changed, so it is tried again
    world.tick()
    st = world.st
    assert (st.phase, st.candidate_version, st.step, st.analysis_failures) == ("Progressing", 2, 0, 0)
    assert st.rolled_back_version is None and st.analysis == []
    world.until(promoted(2))
    assert world.st.stable_version == 2
    assert [(h.version, h.outcome) for h in world.st.history] == [(1, "Promoted"), (2, "RolledBack"), (2, "Promoted")]


def test_a_retry_request_tries_the_rolled_back_version_again_once_per_request_id() -> None:
    world = serving(canary(failure_limit=0), verdict="Failed")
    world.target = 2
    world.ready.add(2)
    world.until(world.phase_is("Degraded"))
    world.commands = Commands(retry="r1")
    world.tick()
    assert world.st.phase == "Progressing" and world.st.candidate_version == 2
    assert world.st.handled_requests == {"retry": "r1"}
    assert reasons.RETRY_REQUESTED in world.reasons()
    world.until(world.phase_is("Degraded"))  # fails again; "r1" is still on the object
    world.forget()
    world.wait(120)
    assert world.st.phase == "Degraded" and world.events == []
    world.commands = Commands(retry="r2")
    world.tick()
    assert world.st.phase == "Progressing" and world.st.candidate_version == 2


def test_a_retry_with_nothing_rolled_back_only_says_so() -> None:
    world = serving(canary())
    world.commands = Commands(retry="r1")
    world.tick()
    assert world.st.phase == "Stable" and world.events[0].reason == reasons.RETRY_REQUESTED
    assert "nothing to retry" in world.events[0].message


def test_a_newer_version_replaces_a_rolled_back_one() -> None:
    world = serving(canary(failure_limit=0), verdict="Failed")
    world.target = 2
    world.ready.add(2)
    world.until(world.phase_is("Degraded"))
    world.verdict = "Passed"
    world.target = 3  # a new training run
    world.ready.add(3)
    world.tick()
    assert world.st.candidate_version == 3 and world.st.rolled_back_version is None
    assert 2 not in world.weights()
    world.until(promoted(3))
    assert world.st.stable_version == 3


def test_going_back_to_the_stable_version_after_a_rollback_settles_as_stable() -> None:
    """The spec now asks for what serves: the rolled-back version is no longer wanted."""
    world = serving(canary(failure_limit=0), verdict="Failed")
    world.target = 2
    world.ready.add(2)
    world.until(world.phase_is("Degraded"))
    world.target, world.generation = 1, world.generation + 1
    world.tick()
    st = world.st
    assert (st.phase, st.stable_version, st.rolled_back_version) == ("Stable", 1, None)
    assert world.weights() == {1: 100}
    world.target, world.generation = 2, world.generation + 1  # and asked for 2 again: a new try
    world.tick()
    assert world.st.phase == "Progressing" and world.st.candidate_version == 2


# == inconclusive ==============================================================================================
def test_inconclusive_holds_is_counted_apart_and_never_promotes_then_data_returns() -> None:
    world = serving(canary((10, "30s"), (50, "30s")), verdict="Inconclusive")
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.wait(1200)
    st = world.st
    assert (st.phase, st.step, st.canary_weight, st.stable_version) == ("Progressing", 0, 10, 1)
    assert st.analysis_inconclusive == len(world.measured) == 40 and st.analysis_failures == 0
    assert st.reason == reasons.ANALYSIS_INCONCLUSIVE and "holding" in st.message
    assert "inconclusive 40" in st.message
    analysis = condition(st.conditions, "Analysis")
    assert analysis is not None and (analysis.status, analysis.reason) == ("Unknown", "AnalysisInconclusive")
    assert "connection refused" in analysis.message and "error-rate=-" in analysis.message
    assert reasons.STEP_ADVANCED not in world.reasons() and reasons.PROMOTED not in world.reasons()
    assert world.reasons().count(reasons.ANALYSIS_INCONCLUSIVE) == 40
    world.verdict = "Passed"
    world.until(promoted(2))
    assert world.st.stable_version == 2 and world.st.analysis_inconclusive == 40


@pytest.mark.parametrize(
    ("verdicts", "counted"),
    [
        ({"error-rate": "Inconclusive"}, "inconclusive"),  # one metric without data holds
        ({"error-rate": "Inconclusive", "latency-p95": "Failed"}, "failure"),  # a failure wins
    ],
)
def test_a_measurement_with_mixed_verdicts(verdicts: dict[str, str], counted: str) -> None:
    world = serving(canary((10, "0s"), failure_limit=5), verdict=verdicts)
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: len(w.measured) == 3)
    st = world.st
    assert (st.analysis_inconclusive, st.analysis_failures) == ((3, 0) if counted == "inconclusive" else (0, 3))
    assert st.phase == "Progressing" and st.step == 0


# == BlueGreen ===================================================================================================
def test_blue_green_previews_analyses_switches_and_keeps_the_old_version_warm() -> None:
    world = serving(blue_green(preview=20, delay="300s"))
    world.target = 2
    world.tick()
    assert world.weights() == {1: 100, 2: 0} and world.st.step is None
    world.ready.add(2)
    world.tick()
    assert world.weights() == {1: 80, 2: 20} and "preview" in world.st.message
    world.tick()
    start = world.now
    world.until(promoted(2))
    assert world.now == start + timedelta(seconds=30) and world.measured == [world.now]
    st = world.st
    assert (st.stable_version, st.previous_version) == (2, 1)
    assert st.history[-1].reason == "analysis passed; switched"
    assert st.scale_down_at == rfc3339(world.now + timedelta(seconds=300))
    assert world.weights() == {2: 100, 1: 0}
    world.wait(299)
    assert world.st.previous_version == 1 and needs_ticks(world.st)
    world.tick()
    assert world.weights() == {2: 100} and not needs_ticks(world.st)


def test_blue_green_abort_after_the_switch_goes_back_at_once() -> None:
    world = serving(blue_green(delay="300s"))
    world.target = 2
    world.ready.add(2)
    world.until(promoted(2))
    world.wait(100)
    world.commands = Commands(abort="a1")
    world.tick()
    st = world.st
    assert (st.phase, st.stable_version, st.previous_version, st.scale_down_at) == ("RollingBack", 1, None, None)
    assert st.rolled_back_version == 2 and st.reason == reasons.ABORTED
    assert world.weights() == {1: 100, 2: 0}  # in one step
    assert st.history[-1].version == 2 and st.history[-1].outcome == "RolledBack"
    assert world.events[-1].warning and "switched back to version 1" in world.events[-1].message
    world.tick()
    assert world.st.phase == "Degraded"
    world.wait(600, dt=5)
    assert world.st.phase == "Degraded" and world.st.candidate_version is None  # 2 is not tried again
    ready = condition(world.st.conditions, "Ready")
    assert ready is not None and ready.status == "True"


def test_abort_after_the_old_version_was_scaled_down_has_nothing_to_switch_back_to() -> None:
    world = serving(blue_green(delay="60s"))
    world.target = 2
    world.ready.add(2)
    world.until(promoted(2))
    world.wait(61)
    world.forget()
    world.commands = Commands(abort="a1")
    world.tick()
    assert world.st.phase == "Stable" and world.st.stable_version == 2
    assert world.events == [Event(False, reasons.ABORTED, "nothing to abort: no rollout in progress")]


def test_blue_green_without_auto_promote_waits_for_a_user() -> None:
    world = serving(blue_green(auto=False, delay="120s"))
    world.target = 2
    world.ready.add(2)
    world.until(world.phase_is("Paused"))
    assert world.st.reason == reasons.AWAITING_PROMOTION and "kubectl slipway promote" in world.st.message
    world.wait(600)
    st = world.st
    assert (st.phase, st.reason, st.candidate_version, st.stable_version) == (
        "Paused",
        reasons.AWAITING_PROMOTION,
        2,
        1,
    )
    assert world.weights() == {1: 100, 2: 0}
    assert len(world.measured) == 21  # analysis keeps running while it waits
    assert world.reasons().count(reasons.AWAITING_PROMOTION) == 1
    assert needs_ticks(st)
    world.commands = Commands(promote="p1")
    world.tick()
    assert (world.st.phase, world.st.stable_version, world.st.previous_version) == ("Stable", 2, 1)
    assert world.st.history[-1].reason == "promoted by a user"
    assert world.st.scale_down_at == rfc3339(world.now + timedelta(seconds=120))


def test_a_failure_while_awaiting_promotion_still_rolls_back() -> None:
    verdicts = iter(["Passed", "Failed"])
    world = serving(blue_green(auto=False, failure_limit=0), verdict=lambda w: next(verdicts))
    world.target = 2
    world.ready.add(2)
    world.until(world.phase_is("Paused"))
    world.until(world.phase_is("Degraded"))
    assert world.st.rolled_back_version == 2 and world.st.stable_version == 1


def test_blue_green_preview_of_zero_with_traffic_metrics_stays_inconclusive() -> None:
    """Documented behaviour: with previewWeight 0 the candidate takes no requests, so request-based
    metrics (error rate, latency) have no data and stay Inconclusive: the rollout holds (it never
    switches on missing data) until a user promotes, or aborts. Use a preview weight, or metrics
    that do not need live traffic, for an automatic switch."""

    def traffic_based(w: World) -> str:
        candidate = w.st.candidate_version
        return "Passed" if w.applied and candidate is not None and w.applied.get(candidate, 0) > 0 else "Inconclusive"

    world = serving(blue_green(preview=0), verdict=traffic_based)
    world.target = 2
    world.ready.add(2)
    world.wait(1800, dt=5)
    st = world.st
    assert (st.phase, st.reason, st.stable_version, st.candidate_version) == (
        "Progressing",
        reasons.ANALYSIS_INCONCLUSIVE,
        1,
        2,
    )
    assert st.analysis_inconclusive == len(world.measured) > 0 and st.analysis_failures == 0
    analysis = condition(st.conditions, "Analysis")
    assert analysis is not None and analysis.status == "Unknown"
    world.commands = Commands(promote="p1")
    world.tick()
    assert world.st.phase == "Stable" and world.st.stable_version == 2


def test_blue_green_without_metrics_switches_once_ready_and_previewed() -> None:
    world = serving(blue_green(preview=0, metrics=[]))
    world.target = 2
    world.wait(20)
    assert world.st.phase == "Progressing"
    world.ready.add(2)
    world.tick()
    assert world.st.phase == "Stable" and world.st.stable_version == 2 and world.measured == []


# == supersede ===================================================================================================
def test_a_newer_target_supersedes_the_rollout_and_starts_at_step_zero() -> None:
    world = serving(canary((10, "30s"), (50, "60s")))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step == 1)
    world.wait(5)
    world.target = 3
    world.tick()
    st = world.st
    assert (st.candidate_version, st.step, st.canary_weight, st.phase) == (3, 0, 0, "Progressing")
    assert st.analysis_failures == 0 and st.analysis == [] and st.last_analysis_at is None
    assert st.history[-1].version == 2 and st.history[-1].outcome == "Superseded"
    assert world.weights() == {1: 100, 3: 0}  # 2 leaves the split; 3 is not ready yet
    assert reasons.SUPERSEDED in world.reasons()
    world.wait(30)
    world.ready.add(3)
    world.until(promoted(3))
    assert world.st.stable_version == 3 and world.st.previous_version == 1


def test_the_target_going_back_to_the_stable_version_cancels_the_rollout() -> None:
    world = serving(canary())
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.canary_weight == 10)
    world.target = 1
    world.tick()
    st = world.st
    assert (st.phase, st.candidate_version, st.stable_version, st.reason) == ("Stable", None, 1, reasons.ENDPOINT_READY)
    assert st.history[-1].version == 2 and st.history[-1].outcome == "Cancelled"
    assert world.weights() == {1: 100} and st.rolled_back_version is None


def test_a_target_that_resolves_to_nothing_leaves_the_rollout_as_it_is() -> None:
    world = serving(canary())
    world.target = None
    world.wait(60)
    assert world.st.phase == "Stable" and world.weights() == {1: 100}


# == commands ===================================================================================================
def test_pause_freezes_the_rollout_and_resume_restarts_the_step() -> None:
    world = serving(canary((10, "60s"), (50, "60s")))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.wait(45)
    world.commands = Commands(paused=True)
    world.tick()
    assert world.st.phase == "Paused" and world.st.reason == reasons.PAUSED
    assert "paused at 10% on version 2" in world.st.message
    measured = len(world.measured)
    world.wait(600)
    assert not analysis_due(world.spec, world.st, world.now + timedelta(hours=1))
    assert (world.st.phase, world.st.step, world.st.canary_weight) == ("Paused", 0, 10)
    assert len(world.measured) == measured and world.weights() == {1: 90, 2: 10}
    assert world.reasons().count(reasons.PAUSED) == 1
    assert needs_ticks(world.st)
    world.commands = Commands(paused=False)
    world.tick()
    resumed = world.now
    assert world.st.phase == "Progressing" and world.st.step_started_at == rfc3339(resumed)
    assert world.reasons()[-1] == reasons.RESUMED
    world.until(lambda w: w.st.step == 1)
    assert world.now == resumed + timedelta(seconds=60)  # the whole pause again


def test_pause_while_waiting_for_readiness_does_not_run_out_the_deadline() -> None:
    world = serving(canary(deadline="60s"))
    world.target = 2
    world.commands = Commands(paused=True)
    world.wait(120)
    assert world.st.phase == "Paused" and world.st.candidate_version == 2


def test_promote_needs_a_ready_candidate_then_switches() -> None:
    world = serving(canary((10, "600s"), (50, "600s")))
    world.target = 2
    world.tick()
    world.commands = Commands(promote="p1")
    world.tick()
    assert world.st.phase == "Progressing" and world.st.handled_requests == {"promote": "p1"}
    assert world.events[-1].warning and "not ready" in world.events[-1].message
    world.ready.add(2)
    world.wait(30)
    assert world.st.phase == "Progressing"  # "p1" was answered; it is not held for later
    world.commands = Commands(promote="p2")
    world.tick()
    st = world.st
    assert (st.phase, st.stable_version, st.previous_version) == ("Stable", 2, 1)
    assert st.history[-1].reason == "promoted by a user"
    assert world.weights() == {2: 100, 1: 0}
    world.target = 3  # the old request id does not promote the next rollout
    world.ready.add(3)
    world.wait(30)
    assert world.st.phase == "Progressing" and world.st.candidate_version == 3


def test_promote_with_nothing_in_progress_only_says_so() -> None:
    world = serving(canary())
    world.commands = Commands(promote="p1")
    world.tick()
    assert world.st.phase == "Stable" and "nothing to promote" in world.events[0].message


def test_abort_mid_rollout_rolls_back() -> None:
    world = serving(canary((10, "30s"), (50, "60s")))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step == 1)
    world.tick()
    world.commands = Commands(abort="a1")
    world.tick()
    st = world.st
    assert (st.phase, st.reason, st.stable_version, st.rolled_back_version) == (
        "RollingBack",
        reasons.ABORTED,
        1,
        2,
    )
    assert "aborted by a user" in st.message and world.weights() == {1: 100, 2: 0}
    world.tick()
    assert world.st.phase == "Degraded"
    world.generation += 1
    world.tick()  # a spec change tries it again; "a1" was handled and does not abort it
    assert world.st.phase == "Progressing" and world.st.candidate_version == 2
    world.until(promoted(2))


def test_abort_of_a_first_version_leaves_the_deployment_failed() -> None:
    world = World(direct(), target=1)
    world.wait(5)
    world.commands = Commands(abort="a1")
    world.tick()
    assert world.st.phase == "Failed" and world.weights() == {1: 0}


def test_abort_with_nothing_in_progress_only_says_so() -> None:
    world = serving(canary())
    world.commands = Commands(abort="a1")
    world.tick()
    assert world.st.phase == "Stable" and "nothing to abort" in world.events[0].message


@pytest.mark.parametrize("verb", ["promote", "abort", "retry"])
def test_the_same_request_id_is_handled_once(verb: str) -> None:
    status = ModelDeploymentStatus(phase="Stable", stable_version=1)
    obs = Observation(1, {1: Endpoint(True)}, {1: 100}, commands=Commands(**{verb: "x"}))
    first = advance(canary(), 1, status, obs, T0)
    assert len(first.events) == 1 and first.status.handled_requests == {verb: "x"}
    again = advance(canary(), 1, first.status, obs, T0 + timedelta(seconds=1))
    assert again.events == []
    new = advance(canary(), 1, first.status, obs._replace(commands=Commands(**{verb: "y"})), T0)
    assert len(new.events) == 1 and new.status.handled_requests == {verb: "y"}


def test_commands_come_from_annotations() -> None:
    annotations = {
        ROLLOUT_REQUEST_PREFIX + "promote": "p",
        ROLLOUT_REQUEST_PREFIX + "abort": "a",
        PAUSED_ANNOTATION: "True",
        "unrelated": "x",
    }
    assert commands_from(annotations) == Commands(promote="p", abort="a", retry="", paused=True)
    assert commands_from({PAUSED_ANNOTATION: "yes"}) == Commands()
    assert commands_from({}) == Commands()


# == restarts and history ========================================================================================
def test_a_full_run_restarted_from_json_every_tick_ends_where_a_live_run_ends() -> None:
    """Every World also runs a restarted twin; here the run itself restarts from its JSON each tick."""

    def run(restart: bool) -> World:
        world = serving(canary((10, "30s"), (50, "30s")))
        world.target = 2
        world.ready.add(2)
        world.commands = Commands(paused=True)
        for second in range(400):
            if restart:
                world.status = through_json(world.status)
            if second == 40:
                world.commands = Commands()
            world.tick()
        return world

    live, restarted = run(False), run(True)
    assert live.st.stable_version == 2 and live.st.previous_version is None
    assert dump(restarted.st) == dump(live.st) and restarted.events == live.events


def test_history_is_capped() -> None:
    world = serving(direct())
    for version in range(2, HISTORY_LIMIT + 5):
        world.target = version
        world.ready.add(version)
        world.until(lambda w, v=version: w.st.stable_version == v)
    assert len(world.st.history) == HISTORY_LIMIT
    assert world.st.history[-1].version == HISTORY_LIMIT + 4


def test_a_generation_bump_mid_rollout_keeps_the_step() -> None:
    world = serving(canary((10, "30s"), (50, "30s")))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step == 1)
    world.tick()
    started = world.st.step_started_at
    world.generation += 1  # e.g. the predictor's resources were edited
    world.wait(5)
    assert (world.st.candidate_version, world.st.step, world.st.step_started_at) == (2, 1, started)


def test_a_newer_target_while_paused_starts_over_and_stays_paused() -> None:
    world = serving(canary())
    world.target = 2
    world.ready |= {2, 3}
    world.until(lambda w: w.st.step_started_at is not None)
    world.commands = Commands(paused=True)
    world.tick()
    world.target = 3
    world.wait(60)
    st = world.st
    assert (st.phase, st.candidate_version, st.canary_weight) == ("Paused", 3, 0)
    assert world.weights() == {1: 100, 3: 0} and world.st.history[-1].outcome == "Superseded"
    world.commands = Commands()
    world.until(promoted(3))


def test_promote_and_abort_work_while_paused() -> None:
    world = serving(canary())
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.commands = Commands(paused=True)
    world.tick()
    world.commands = Commands(promote="p1", paused=True)
    world.tick()
    assert world.st.phase == "Stable" and world.st.stable_version == 2
    world.target = 3
    world.ready.add(3)
    world.wait(5)
    assert world.st.phase == "Paused" and world.st.candidate_version == 3  # the annotation is still there
    world.commands = Commands(promote="p1", abort="a1", paused=True)
    world.tick()
    # 3 never had traffic (it was paused at 0%), so the route already shows the rollback done
    assert world.st.phase == "Degraded" and world.st.stable_version == 2 and world.st.rolled_back_version == 3
    assert world.st.reason == reasons.ABORTED


def test_switching_the_strategy_to_direct_mid_canary_switches_at_once() -> None:
    world = serving(canary((10, "600s"), (50, "600s")))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.spec, world.generation = direct(), world.generation + 1
    world.tick()
    assert world.weights() == {1: 0, 2: 100}
    world.tick()
    assert world.st.phase == "Stable" and world.st.stable_version == 2


def test_fewer_steps_edited_in_mid_rollout_promote_after_the_last_one() -> None:
    world = serving(canary((10, "10s"), (20, "10s"), (30, "10s")))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step == 2)
    world.spec, world.generation = canary((10, "10s")), world.generation + 1
    world.tick()
    assert world.st.canary_weight == 10  # the last step there is now
    world.until(promoted(2))


# == shadow ============================================================================================
SHADOW = {"percent": 100, "duration": "60s"}


def in_shadow(world: World) -> bool:
    return world.st.shadow_percent is not None


@pytest.mark.parametrize(
    "spec", [canary(shadow=SHADOW), blue_green(preview=20), direct()], ids=["shadow", "preview", "Direct"]
)
def test_a_candidate_that_stops_being_ready_gets_no_traffic_and_no_mirror_until_it_is_back(
    spec: ModelDeploymentSpec,
) -> None:
    world = serving(spec)
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None or w.st.stable_version == 2)
    if world.st.stable_version == 2:  # Direct: promoted at once; take it down with version 3 instead
        world.target = 3
        world.ready.add(3)
        world.until(lambda w: w.traffic is not None and w.traffic.weight == 100)
    candidate = world.st.candidate_version
    assert candidate is not None and world.traffic is not None and (world.traffic.weight or world.traffic.mirror)
    world.ready.discard(candidate)
    world.tick()
    assert world.st.reason == reasons.WAITING_FOR_CANDIDATE
    assert world.traffic is not None and world.traffic.weight == 0 and world.traffic.mirror == 0
    world.ready.add(candidate)
    world.until(lambda w: w.traffic is not None and (w.traffic.weight or w.traffic.mirror))
    world.until(lambda w: w.st.phase == "Stable")
    assert world.st.stable_version == candidate


def test_canary_shadow_mirrors_without_user_traffic_then_walks_the_steps() -> None:
    world = serving(canary((10, "60s"), (50, "60s"), shadow={"percent": 50, "duration": "60s"}))
    world.target = 2
    world.tick()
    assert world.st.shadow_percent == 0 and world.traffic is not None and world.traffic.mirror == 0  # not ready
    world.ready.add(2)
    world.tick()  # ready: the mirror is asked for, still no user traffic
    assert world.st.shadow_percent == 50 and world.weights() == {1: 100, 2: 0}
    assert world.traffic is not None and world.traffic.mirror == 50
    assert world.st.step_started_at is None and "shadow: mirroring 50%" in world.st.message
    world.tick()  # the gateway mirrors now: the stage starts
    start = world.now
    assert world.st.step_started_at == rfc3339(start) and "shadow: 50% mirrored to version 2" in world.st.message
    world.until(lambda w: not in_shadow(w))
    assert world.now == start + timedelta(seconds=60)
    assert world.measured == [start + timedelta(seconds=30), start + timedelta(seconds=60)]
    assert world.reasons()[-1] == reasons.SHADOW_PASSED
    assert world.st.canary_weight == 10 and world.st.step == 0 and world.weights() == {1: 90, 2: 10}
    assert world.traffic is not None and world.traffic.mirror == 0
    world.until(promoted(2))
    assert world.reasons() == [reasons.ROLLOUT_STARTED, reasons.SHADOW_PASSED, reasons.STEP_ADVANCED, reasons.PROMOTED]
    assert not world.user_weight_during_shadow


@pytest.mark.parametrize(
    "spec",
    [canary(shadow=SHADOW, failure_limit=0), blue_green(preview=20, shadow=SHADOW, failure_limit=0)],
    ids=["Canary", "BlueGreen"],
)
def test_a_failure_in_shadow_rolls_back_before_any_user_traffic(spec: ModelDeploymentSpec) -> None:
    world = serving(spec, verdict={"error-rate": "Failed"})
    world.target = 2
    world.ready.add(2)
    world.until(world.phase_is("RollingBack"))
    st = world.st
    assert st.reason == reasons.ANALYSIS_FAILED and st.shadow_percent is None
    assert "shadow: error-rate" in st.message and st.history[-1].reason.startswith("AnalysisFailed: shadow: error-rate")
    assert world.weights() == {1: 100, 2: 0} and world.traffic is not None and world.traffic.mirror == 0
    assert not world.user_weight_during_shadow and len(world.measured) == 1
    world.tick()
    assert world.st.phase == "Degraded"


def test_inconclusive_in_shadow_holds_it_and_never_passes() -> None:
    world = serving(canary(shadow=SHADOW), verdict="Inconclusive")
    world.target = 2
    world.ready.add(2)
    world.wait(600)
    st = world.st
    assert st.shadow_percent == 100 and st.phase == "Progressing" and st.reason == reasons.ANALYSIS_INCONCLUSIVE
    assert st.analysis_inconclusive == len(world.measured) > 10 and world.weights() == {1: 100, 2: 0}
    assert "holding" in st.message and reasons.SHADOW_PASSED not in world.reasons()
    world.verdict = "Passed"
    world.until(lambda w: not in_shadow(w))
    assert world.weights() == {1: 90, 2: 10}


def test_shadow_without_metrics_passes_on_its_duration() -> None:
    world = serving(canary((10, "10s"), metrics=[], shadow={"duration": "45s"}))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    start = world.now
    world.until(lambda w: not in_shadow(w))
    assert world.now == start + timedelta(seconds=45) and world.measured == []
    assert world.traffic is not None and world.traffic.mirror == 0 and world.st.canary_weight == 10


def test_the_shadow_stage_starts_only_once_the_mirror_is_in_effect() -> None:
    world = serving(canary(shadow=SHADOW))
    world.gateway_up = False
    world.target = 2
    world.ready.add(2)
    world.wait(120)
    assert world.st.step_started_at is None and world.measured == [] and in_shadow(world)
    world.gateway_up = True
    world.tick()
    world.tick()
    assert world.st.step_started_at == rfc3339(world.now)
    # The gateway reverts the mirror (the route lost, say): the stage starts over once it is back.
    world.mirrored = {}
    world.gateway_up = False
    world.tick()
    assert world.st.step_started_at is None
    world.gateway_up = True
    world.until(lambda w: not in_shadow(w))


def test_blue_green_shadow_with_no_preview_is_the_preview_then_switches() -> None:
    world = serving(blue_green(preview=0, shadow=SHADOW))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    start = world.now
    world.until(promoted(2))
    assert world.now == start + timedelta(seconds=60) and len(world.measured) == 2
    assert world.reasons() == [reasons.ROLLOUT_STARTED, reasons.SHADOW_PASSED, reasons.PROMOTED]
    assert world.weights() == {2: 100, 1: 0} and world.traffic is not None and world.traffic.mirror == 0
    assert not world.user_weight_during_shadow


def test_blue_green_shadow_then_preview_then_switch() -> None:
    world = serving(blue_green(preview=20, shadow=SHADOW))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.until(lambda w: not in_shadow(w))
    assert world.weights() == {1: 80, 2: 20} and "preview" in world.st.message
    world.tick()
    start = world.now
    world.until(promoted(2))
    assert world.now == start + timedelta(seconds=30)


def test_blue_green_shadow_awaiting_promotion_keeps_mirroring_and_guarding() -> None:
    verdicts = iter(["Passed", "Passed", "Passed", "Failed"])
    world = serving(blue_green(preview=0, auto=False, failure_limit=0, shadow=SHADOW), verdict=lambda w: next(verdicts))
    world.target = 2
    world.ready.add(2)
    world.until(world.phase_is("Paused"))
    assert world.st.reason == reasons.AWAITING_PROMOTION and world.st.shadow_percent == 100
    assert world.traffic is not None and world.traffic.mirror == 100 and world.weights() == {1: 100, 2: 0}
    world.until(world.phase_is("RollingBack"))  # the mirror kept feeding analysis: a failure still ends it
    assert world.reasons().count(reasons.SHADOW_PASSED) == 1 and world.reasons().count(reasons.AWAITING_PROMOTION) == 1
    assert "shadow: error-rate" in world.st.message


def test_pause_in_shadow_keeps_the_mirror_and_resume_restarts_the_stage() -> None:
    world = serving(canary(shadow=SHADOW))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.wait(40)
    world.commands = Commands(paused=True)
    world.wait(300)
    assert world.st.phase == "Paused" and world.st.shadow_percent == 100
    assert world.traffic is not None and world.traffic.mirror == 100
    world.commands = Commands()
    world.tick()
    start = world.now
    assert world.st.step_started_at == rfc3339(start) and reasons.RESUMED in world.reasons()
    world.until(lambda w: not in_shadow(w))
    assert world.now == start + timedelta(seconds=60)


def test_a_promote_or_abort_in_shadow_ends_the_stage() -> None:
    world = serving(canary(shadow=SHADOW))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.commands = Commands(promote="p1")
    world.tick()
    assert world.st.phase == "Stable" and world.st.shadow_percent is None and world.weights() == {2: 100, 1: 0}
    world = serving(canary(shadow=SHADOW))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.commands = Commands(abort="a1")
    world.tick()
    assert world.st.phase == "Degraded" and world.st.shadow_percent is None  # 0% on it already
    assert world.st.reason == reasons.ABORTED and world.traffic is not None and world.traffic.mirror == 0


def test_shadow_taken_out_of_the_spec_mid_stage_goes_on_to_the_steps() -> None:
    world = serving(canary((10, "10s"), shadow=SHADOW))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.spec, world.generation = canary((10, "10s")), world.generation + 1
    world.tick()
    assert world.st.shadow_percent is None and world.st.canary_weight == 10
    world.until(promoted(2))
    assert reasons.SHADOW_PASSED not in world.reasons()


def test_a_percent_edited_mid_shadow_restarts_the_stage_at_the_new_mirror() -> None:
    world = serving(canary(shadow=SHADOW))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    world.wait(40)
    world.spec, world.generation = canary(shadow={"percent": 10, "duration": "60s"}), world.generation + 1
    world.tick()
    assert world.st.shadow_percent == 10 and world.st.step_started_at is None
    world.tick()
    start = world.now
    world.until(lambda w: not in_shadow(w))
    assert world.now == start + timedelta(seconds=60)


def test_an_operator_restart_mid_shadow_resumes_the_stage() -> None:
    """The World already restarts a twin every tick; here a whole new World takes over the status."""
    world = serving(canary(shadow=SHADOW))
    world.target = 2
    world.ready.add(2)
    world.until(lambda w: w.st.step_started_at is not None)
    started = world.st.step_started_at
    world.wait(35)
    assert len(world.measured) == 1
    restored = through_json(world.st)
    assert restored.shadow_percent == 100 and restored.step_started_at == started
    later = World(
        world.spec,
        target=2,
        now=world.now,
        ready={1, 2},
        status=restored,
        restored=restored,
        applied=world.applied,
        mirrored=dict(world.mirrored),
        ever_ready={1, 2},
    )
    later.tick()
    assert later.st.step_started_at == started and later.st.shadow_percent == 100  # not started over
    later.until(lambda w: not in_shadow(w))
    assert later.now == parse(started) + timedelta(seconds=60)


def test_a_first_version_and_direct_have_no_shadow_stage() -> None:
    world = World(canary(shadow=SHADOW), target=1, ready={1})
    world.until(world.phase_is("Stable"))
    assert reasons.SHADOW_PASSED not in world.reasons()
    strategy = {"type": "Direct", "canary": {"steps": [{"weight": 10}], "shadow": SHADOW}}
    world = serving(spec_of(strategy))
    world.target = 2
    world.ready.add(2)
    world.until(promoted(2))
    assert world.st.shadow_percent is None and reasons.SHADOW_PASSED not in world.reasons()


def parse(stamp: str | None) -> datetime:
    assert stamp is not None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


STRATEGIES = {
    "Canary": lambda: canary((10, "20s"), (50, "20s"), interval="10s", failure_limit=1, deadline="120s"),
    "BlueGreen": lambda: blue_green(preview=20, interval="10s", delay="60s"),
    "BlueGreenManual": lambda: blue_green(preview=0, auto=False, interval="10s", delay="60s"),
    "CanaryShadow": lambda: canary(
        (10, "20s"), interval="10s", deadline="120s", shadow={"percent": 30, "duration": "20s"}
    ),
    "BlueGreenShadow": lambda: blue_green(preview=0, auto=False, interval="10s", delay="60s", shadow=SHADOW),
    "Direct": lambda: direct(deadline="60s"),
}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_random_walks_keep_every_invariant(strategy: str, seed: int) -> None:
    """Targets, readiness, the gateway, verdicts, commands and spec changes at random; each tick is
    checked by the World (invariants, a restart at every step), and here for the rules of the game:
    a rolled-back version is not retried for the same generation without a retry, nothing is
    promoted by analysis without a passing measurement, and nothing unready is promoted."""
    rng = random.Random(seed)
    world = World(STRATEGIES[strategy](), target=1, ready={1})
    requests = 0
    for _ in range(400):
        roll = rng.random()
        if roll < 0.01:
            world.target = rng.choice([1, 2, 3, 4, None])
        elif roll < 0.02:
            world.generation += 1
        elif roll < 0.04:
            world.ready ^= {rng.choice([1, 2, 3, 4])}
        elif roll < 0.05:
            world.gateway_up = not world.gateway_up
        elif roll < 0.06:
            requests += 1
            verb = rng.choice(["promote", "abort", "retry"])
            world.commands = world.commands._replace(**{verb: f"{verb}-{requests}"})
        elif roll < 0.065:
            world.commands = world.commands._replace(paused=not world.commands.paused)
        elif roll > 0.97:
            world.ready |= {1, 2, 3, 4}
        world.verdict = rng.choice(["Passed"] * 6 + ["Failed", "Inconclusive"])
        before = world.st
        decision = world.tick(rng.choice([1, 1, 1, 5]))
        after = decision.status
        started = after.candidate_version is not None and after.candidate_version != before.candidate_version
        if started and before.rolled_back_version == after.candidate_version:
            retried = any(e.reason == reasons.RETRY_REQUESTED for e in decision.events)
            assert retried or (before.rolled_back_generation or 0) < world.generation
        settings = analysis_of(world.spec)
        for entry in after.history[len(before.history) :] if len(after.history) > len(before.history) else []:
            if entry.outcome != "Promoted":
                continue
            assert entry.version in world.ready
            if entry.reason in ("passed every step", "analysis passed; switched") and settings and settings.metrics:
                assert after.analysis and all(r.verdict == "Passed" for r in after.analysis)
    assert world.decisions == 400


# == the small functions ==========================================================================================
def status(**fields: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "weights"),
    [
        ({}, {}),
        ({"stableVersion": 1}, {1: 100}),
        ({"candidateVersion": 1, "canaryWeight": 100}, {1: 100}),
        ({"candidateVersion": 1, "canaryWeight": 0}, {1: 100}),  # a first version is all there is
        ({"stableVersion": 1, "candidateVersion": 2, "canaryWeight": 10}, {1: 90, 2: 10}),
        ({"stableVersion": 1, "candidateVersion": 2, "canaryWeight": 0}, {1: 100, 2: 0}),
        ({"stableVersion": 1, "canaryWeight": 40}, {1: 100}),  # a weight without a candidate is stale
        ({"stableVersion": 2, "previousVersion": 1}, {2: 100, 1: 0}),
        ({"stableVersion": 1, "rolledBackVersion": 2}, {1: 100, 2: 0}),
        ({"stableVersion": 2, "previousVersion": 1, "rolledBackVersion": 1}, {2: 100, 1: 0}),
        ({"stableVersion": 1, "candidateVersion": 3, "canaryWeight": 50, "previousVersion": 3}, {1: 50, 3: 50}),
        ({"rolledBackVersion": 1}, {1: 0}),
    ],
)
def test_traffic_of_a_status(fields: dict[str, Any], weights: dict[int, int]) -> None:
    traffic = traffic_of(status(**fields))
    assert traffic.weights() == weights
    assert len(traffic.warm) == len(set(traffic.warm))


@pytest.mark.parametrize(
    ("fields", "ticks"),
    [
        ({}, False),
        ({"phase": "Stable", "stableVersion": 1}, False),
        ({"phase": "Degraded", "stableVersion": 1, "rolledBackVersion": 2}, False),
        ({"phase": "Failed", "rolledBackVersion": 1}, False),
        ({"phase": "Stable", "stableVersion": 2, "previousVersion": 1}, True),
        ({"phase": "Progressing", "candidateVersion": 1}, True),
        ({"phase": "Paused", "candidateVersion": 2}, True),
        ({"phase": "RollingBack", "stableVersion": 1}, True),
    ],
)
def test_needs_ticks(fields: dict[str, Any], ticks: bool) -> None:
    assert needs_ticks(status(**fields)) is ticks


STEP = rfc3339(T0)
RUNNING = {"phase": "Progressing", "stableVersion": 1, "candidateVersion": 2, "stepStartedAt": STEP}


@pytest.mark.parametrize(
    ("spec", "fields", "after", "due"),
    [
        (canary(), RUNNING, 29, False),
        (canary(), RUNNING, 30, True),
        (canary(), {**RUNNING, "lastAnalysisAt": rfc3339(T0 + timedelta(seconds=30))}, 59, False),
        (canary(), {**RUNNING, "lastAnalysisAt": rfc3339(T0 + timedelta(seconds=30))}, 60, True),
        (canary(), {**RUNNING, "lastAnalysisAt": rfc3339(T0 - timedelta(seconds=25))}, 29, False),  # older step
        (canary(), {**RUNNING, "stepStartedAt": None}, 300, False),  # weight not in effect yet
        (canary(), {**RUNNING, "candidateVersion": None}, 300, False),
        (canary(), {**RUNNING, "stableVersion": None}, 300, False),  # a first version is not analysed
        (canary(metrics=[]), RUNNING, 300, False),
        (direct(), RUNNING, 300, False),
        (canary(), {**RUNNING, "phase": "Paused", "reason": reasons.PAUSED}, 300, False),
        (canary(), {**RUNNING, "phase": "RollingBack"}, 300, False),
        (blue_green(auto=False), {**RUNNING, "phase": "Paused", "reason": reasons.AWAITING_PROMOTION}, 30, True),
        (blue_green(), RUNNING, 30, True),
        (canary(interval="2m"), RUNNING, 119, False),
        (canary(interval="2m"), RUNNING, 120, True),
    ],
)
def test_analysis_due(spec: ModelDeploymentSpec, fields: dict[str, Any], after: int, due: bool) -> None:
    assert analysis_due(spec, status(**fields), T0 + timedelta(seconds=after)) is due


def test_analysis_of_each_strategy() -> None:
    assert analysis_of(direct()) is None
    canary_analysis = analysis_of(canary(interval="10s"))
    assert canary_analysis is not None and canary_analysis.interval == "10s"
    bg_analysis = analysis_of(blue_green(interval="20s"))
    assert bg_analysis is not None and bg_analysis.interval == "20s"


def test_a_measurement_that_arrives_while_the_weight_is_not_in_effect_is_not_recorded() -> None:
    current = status(**RUNNING, step=0, canaryWeight=10, rolloutStartedAt=STEP)
    spec = canary()
    obs = Observation(2, {1: Endpoint(True), 2: Endpoint(True)}, {1: 100, 2: 0}, measurement(spec, "Failed", STEP))
    decision = advance(spec, 1, current, obs, T0 + timedelta(seconds=30))
    assert decision.status.analysis_failures == 0 and decision.status.step_started_at is None


def test_rfc3339_round_trips_whole_seconds() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    assert rfc3339(moment) == "2026-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("fields", "only_deadline"),
    [
        ({"phase": "Progressing", "reason": reasons.WAITING_FOR_CANDIDATE, "candidateVersion": 2}, True),
        ({"phase": "Paused", "reason": reasons.WAITING_FOR_CANDIDATE, "candidateVersion": 2}, True),
        # an old version still waits for its scale-down: time matters for that too
        (
            {
                "phase": "Progressing",
                "reason": reasons.WAITING_FOR_CANDIDATE,
                "candidateVersion": 3,
                "previousVersion": 1,
            },
            False,
        ),
        ({"phase": "Progressing", "reason": reasons.ROLLING_OUT, "candidateVersion": 2}, False),
        ({"phase": "Paused", "reason": reasons.PAUSED, "candidateVersion": 2}, False),
        ({"phase": "RollingBack", "stableVersion": 1}, False),
        ({"phase": "Stable", "stableVersion": 1}, False),
    ],
)
def test_only_deadline_timed(fields: dict[str, Any], only_deadline: bool) -> None:
    assert only_deadline_timed(status(**fields)) is only_deadline


def test_progress_deadline_counts_from_the_rollout_start() -> None:
    spec = canary(deadline="90s")
    started = status(rolloutStartedAt=rfc3339(T0))
    assert progress_deadline(spec, started, T0 + timedelta(hours=1)) == T0 + timedelta(seconds=90)
    assert progress_deadline(spec, status(), T0) == T0 + timedelta(seconds=90)  # starting now
