"""The rollout engine: (spec, status, observation, now) -> (status, traffic, events).

Pure and deterministic: the whole rollout lives in the ModelDeployment's status, so a restarted
operator (or a new leader) continues at the same step. The handler observes the children, takes
a measurement when `analysis_due` says so, calls `advance`, and applies the traffic it returns.

Rules that never bend: traffic moves to a version only once its endpoint is ready and its
analysis passed (or a user promotes it); an Inconclusive measurement holds and never passes; a
rolled-back version is not tried again until the spec changes or a user retries.

A shadow stage (`strategy.<canary|blueGreen>.shadow`) comes first when set: the candidate gets 0% of
the users' traffic and a mirror of `percent`% of it (its answers discarded), and is judged by the
same analysis as a step; `status.shadowPercent` marks the stage (0 until the candidate is ready).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

from ..api.base import ConditionStatus, seconds
from ..api.modeldeployment import (
    Analysis,
    AnalysisResult,
    HistoryEntry,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Shadow,
)
from ..api.resources import PAUSED_ANNOTATION, ROLLOUT_REQUEST_PREFIX, ROLLOUT_VERBS
from . import reasons
from .analysis import overall
from .conditions import set_condition
from .predictors import record_predictor

DRAIN_SECONDS = 30  # a replaced version stays up this long after the switch, for requests in flight
HISTORY_LIMIT = 20
ACTIVE_PHASES = ("Progressing", "Paused", "RollingBack")
VERDICT_STATUS: dict[str, ConditionStatus] = {"Passed": "True", "Failed": "False", "Inconclusive": "Unknown"}


class Commands(NamedTuple):
    """What a user asked for through the API (annotations; see handlers)."""

    promote: str = ""  # request ids: a new id is a new request
    abort: str = ""
    retry: str = ""
    paused: bool = False


def commands_from(annotations: Mapping[str, str]) -> Commands:
    promote, abort, retry = (annotations.get(ROLLOUT_REQUEST_PREFIX + verb, "") for verb in ROLLOUT_VERBS)
    return Commands(promote, abort, retry, annotations.get(PAUSED_ANNOTATION, "").lower() == "true")


class Endpoint(NamedTuple):
    ready: bool
    detail: str = ""


class Observation(NamedTuple):
    target: int | None  # the version the spec asks for, resolved; None: nothing to serve
    endpoints: Mapping[int, Endpoint]  # version -> its InferenceService's readiness
    applied: Mapping[int, int] | None  # version -> traffic percent in effect; None: not known
    analysis: list[AnalysisResult] | None = None  # a measurement taken for this tick
    commands: Commands = Commands()
    mirrored: Mapping[int, int] | None = None  # version -> percent mirrored to it in effect (with `applied`)


class Traffic(NamedTuple):
    stable: int | None
    candidate: int | None
    weight: int  # percent on the candidate
    warm: tuple[int, ...]  # kept running without traffic (switch-back, inspection, draining)
    mirror: int = 0  # percent of requests mirrored to the candidate (shadow stage); answers discarded

    def weights(self) -> dict[int, int]:
        """Percent per version; warm versions stay in the split at 0."""
        split: dict[int, int] = {}
        if self.stable is not None:
            split[self.stable] = 100 - self.weight if self.candidate is not None else 100
        if self.candidate is not None:
            split[self.candidate] = self.weight if self.stable is not None else 100
        for version in self.warm:
            split.setdefault(version, 0)
        return split


class Event(NamedTuple):
    warning: bool
    reason: str
    message: str


class Decision(NamedTuple):
    status: ModelDeploymentStatus
    traffic: Traffic
    events: list[Event]


def rfc3339(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def analysis_of(spec: ModelDeploymentSpec) -> Analysis | None:
    strategy = spec.strategy
    if strategy.type == "Canary" and strategy.canary is not None:
        return strategy.canary.analysis
    if strategy.type == "BlueGreen":
        return strategy.blue_green.analysis
    return None


def shadow_of(spec: ModelDeploymentSpec) -> Shadow | None:
    """The strategy's shadow stage, if it has one."""
    strategy = spec.strategy
    if strategy.type == "Canary" and strategy.canary is not None:
        return strategy.canary.shadow
    if strategy.type == "BlueGreen":
        return strategy.blue_green.shadow
    return None


def traffic_of(status: ModelDeploymentStatus) -> Traffic:
    warm = tuple(
        v
        for v in (status.previous_version, status.rolled_back_version)
        if v is not None and v not in (status.stable_version, status.candidate_version)
    )
    weight = status.canary_weight if status.candidate_version is not None else 0
    shadowing = status.candidate_version is not None and status.stable_version is not None
    mirror = (status.shadow_percent or 0) if shadowing else 0
    return Traffic(status.stable_version, status.candidate_version, weight, tuple(dict.fromkeys(warm)), mirror)


def needs_ticks(status: ModelDeploymentStatus) -> bool:
    """Whether time alone can change this deployment (pauses, analysis, deadlines, scale-down)."""
    return status.phase in ACTIVE_PHASES or status.previous_version is not None


def only_deadline_timed(status: ModelDeploymentStatus) -> bool:
    """Whether the progress deadline is the one thing time can change: the candidate is not ready
    (its readiness comes as an event) and no old version waits for its scale-down."""
    return (
        status.phase in ("Progressing", "Paused")
        and status.reason == reasons.WAITING_FOR_CANDIDATE
        and status.previous_version is None
    )


def progress_deadline(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> datetime:
    """When a candidate that is still not ready is given up (counted from the rollout's start)."""
    started = parse_time(status.rollout_started_at) if status.rollout_started_at else now
    return started + timedelta(seconds=seconds(spec.strategy.progress_deadline))


def _awaiting_promotion(status: ModelDeploymentStatus) -> bool:
    return status.phase == "Paused" and status.reason == reasons.AWAITING_PROMOTION


def analysis_due(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> bool:
    """A measurement is due every interval once the candidate's weight is in effect."""
    analysis = analysis_of(spec)
    if status.candidate_version is None or status.step_started_at is None or status.stable_version is None:
        return False
    if analysis is None or not analysis.metrics:
        return False
    if status.phase != "Progressing" and not _awaiting_promotion(status):
        return False
    since = parse_time(status.step_started_at)
    if status.last_analysis_at is not None:
        since = max(since, parse_time(status.last_analysis_at))
    return now >= since + timedelta(seconds=seconds(analysis.interval))


def advance(
    spec: ModelDeploymentSpec,
    generation: int | None,
    current: ModelDeploymentStatus,
    observation: Observation,
    now: datetime,
) -> Decision:
    tick = _Tick(spec, generation or 0, current.model_copy(deep=True), observation, now)
    tick.handle_commands()
    tick.settle_target()
    tick.progress()
    tick.scale_down()
    tick.record_predictors()
    return tick.finish()


class _Tick:
    """One step of the state machine; mutates its own copy of the status."""

    def __init__(
        self, spec: ModelDeploymentSpec, generation: int, status: ModelDeploymentStatus, obs: Observation, now: datetime
    ) -> None:
        self.spec, self.generation, self.st, self.obs, self.now = spec, generation, status, obs, now
        self.stamp = rfc3339(now)
        self.events: list[Event] = []

    # -- helpers -------------------------------------------------------------------------------
    def event(self, warning: bool, reason: str, message: str) -> None:
        self.events.append(Event(warning, reason, message))

    def history(self, version: int, outcome: str, reason: str) -> None:
        entry = HistoryEntry(version=version, outcome=outcome, time=self.stamp, reason=reason)
        self.st.history = [*self.st.history, entry][-HISTORY_LIMIT:]

    def state(self, phase: str, reason: str, message: str) -> None:
        self.st.phase = phase  # type: ignore[assignment]  # one of DeploymentPhase by construction
        self.st.reason, self.st.message = reason, message

    def applied(self, version: int) -> int | None:
        return None if self.obs.applied is None else self.obs.applied.get(version, 0)

    def mirrored(self, version: int) -> int | None:
        """The percent mirrored to `version` in effect; None when the route's state is not known."""
        return None if self.obs.applied is None else (self.obs.mirrored or {}).get(version, 0)

    def new_request(self, verb: str) -> bool:
        request = getattr(self.obs.commands, verb)
        if not request or self.st.handled_requests.get(verb) == request:
            return False
        self.st.handled_requests = {**self.st.handled_requests, verb: request}
        return True

    # -- user requests -------------------------------------------------------------------------
    def handle_commands(self) -> None:
        st = self.st
        if self.new_request("retry"):
            if st.rolled_back_version is not None:
                self.event(False, reasons.RETRY_REQUESTED, f"retrying version {st.rolled_back_version}")
                st.rolled_back_version = st.rolled_back_generation = None
            else:
                self.event(False, reasons.RETRY_REQUESTED, "nothing to retry: no version was rolled back")
        if self.new_request("abort"):
            if st.candidate_version is not None:
                self.rollback(reasons.ABORTED, "aborted by a user")
            elif st.previous_version is not None and st.stable_version is not None:
                self.switch_back()
            else:
                self.event(False, reasons.ABORTED, "nothing to abort: no rollout in progress")
        if self.new_request("promote"):
            candidate = st.candidate_version
            endpoint = self.obs.endpoints.get(candidate) if candidate is not None else None
            if candidate is None:
                self.event(False, reasons.PROMOTED, "nothing to promote: no rollout in progress")
            elif endpoint is None or not endpoint.ready:
                self.event(True, reasons.PROMOTED, f"version {candidate} is not ready; it cannot be promoted yet")
            else:
                self.promote(candidate, "promoted by a user")

    # -- which version to roll out -------------------------------------------------------------
    def settle_target(self) -> None:
        st, target = self.st, self.obs.target
        if target is None or target == st.candidate_version:
            return
        if target == st.stable_version:
            if st.candidate_version is not None:  # the spec went back to what is serving
                self.history(st.candidate_version, "Cancelled", f"version {target} was requested again")
                self.event(False, reasons.SUPERSEDED, f"rollout of version {st.candidate_version} cancelled")
                self.clear_candidate()
                self.state("Stable", reasons.ENDPOINT_READY, f"serving version {target}")
            elif st.rolled_back_version is not None:  # the spec no longer asks for the rolled-back one
                st.rolled_back_version = st.rolled_back_generation = None
                self.state("Stable", reasons.ENDPOINT_READY, f"serving version {target}")
            return
        if target == st.rolled_back_version and (st.rolled_back_generation or 0) >= self.generation:
            return  # held: not retried until the spec changes or a user retries
        if st.candidate_version is not None:
            self.history(st.candidate_version, "Superseded", f"version {target} arrived")
            self.event(False, reasons.SUPERSEDED, f"version {target} supersedes version {st.candidate_version}")
        st.rolled_back_version = st.rolled_back_generation = None
        self.start(target)

    def start(self, version: int) -> None:
        st = self.st
        direct = st.stable_version is None or self.spec.strategy.type == "Direct"
        st.candidate_version = version
        # A first version is all there is; beside a stable one, traffic waits for readiness (Direct too).
        st.canary_weight = 100 if st.stable_version is None else 0
        st.step = 0 if not direct and self.spec.strategy.type == "Canary" else None
        # The shadow stage comes first; its mirror starts, like any traffic, once the candidate is ready.
        st.shadow_percent = 0 if not direct and shadow_of(self.spec) is not None else None
        st.rollout_started_at, st.step_started_at, st.last_analysis_at = self.stamp, None, None
        st.analysis_failures = st.analysis_inconclusive = 0
        st.analysis = []
        st.conditions = [c for c in st.conditions if c.type != "Analysis"]  # the last rollout's verdict
        how = "Direct" if direct else self.spec.strategy.type
        self.state("Progressing", reasons.ROLLING_OUT, f"rolling out version {version} ({how})")
        self.event(False, reasons.ROLLOUT_STARTED, f"rolling out version {version} ({how})")

    def clear_candidate(self) -> None:
        st = self.st
        st.candidate_version, st.canary_weight, st.step, st.shadow_percent = None, 0, None, None
        st.rollout_started_at = st.step_started_at = None

    # -- the candidate's way through its steps ------------------------------------------------------
    def progress(self) -> None:
        st = self.st
        candidate = st.candidate_version
        if candidate is None:
            self.settle_without_candidate()
            return
        if self.obs.commands.paused:
            if not (st.phase == "Paused" and st.reason == reasons.PAUSED):
                self.event(False, reasons.PAUSED, f"rollout of version {candidate} paused by a user")
            self.state("Paused", reasons.PAUSED, f"paused at {st.canary_weight}% on version {candidate}")
            return
        if st.phase == "Paused" and st.reason == reasons.PAUSED:
            self.event(False, reasons.RESUMED, f"rollout of version {candidate} resumed")
            st.step_started_at = None  # the step's pause and analysis start over
            self.state("Progressing", reasons.RESUMED, f"resumed rollout of version {candidate}")
        endpoint = self.obs.endpoints.get(candidate, Endpoint(False, "its InferenceService does not exist yet"))
        if not endpoint.ready:
            self.wait_for_ready(candidate, endpoint.detail)
            return
        if st.stable_version is None or self.spec.strategy.type == "Direct":
            self.switch_directly(candidate)
            return
        self.progress_step(candidate)

    def wait_for_ready(self, candidate: int, detail: str) -> None:
        st = self.st
        if self.now >= progress_deadline(self.spec, st, self.now):
            why = f"version {candidate} did not become ready within {self.spec.strategy.progress_deadline}"
            self.rollback(reasons.PROGRESS_DEADLINE_EXCEEDED, f"{why}: {detail}")
            return
        if st.phase not in ("Progressing", "Paused"):
            st.phase = "Progressing"
        st.step_started_at = None  # the step's pause and analysis start over once it is ready again
        if st.stable_version is not None:
            # Requests routed to a candidate that is not ready fail (a Gateway answers 5xx for a
            # backend without endpoints): like a new one's, its traffic and mirror wait for readiness.
            st.canary_weight = 0
            if st.shadow_percent is not None:
                st.shadow_percent = 0
        self.state(st.phase, reasons.WAITING_FOR_CANDIDATE, f"waiting for version {candidate} to be ready: {detail}")

    def switch_directly(self, candidate: int) -> None:
        self.st.canary_weight, self.st.shadow_percent = 100, None
        if self.applied(candidate) == 100:
            self.promote(candidate, "replaced at once (Direct)" if self.st.stable_version else "first version")
        else:
            self.state("Progressing", reasons.ROLLING_OUT, f"moving all traffic to version {candidate}")

    def progress_step(self, candidate: int) -> None:
        st, strategy = self.st, self.spec.strategy
        analysis = analysis_of(self.spec) or Analysis()
        if st.shadow_percent is not None:
            shadow = shadow_of(self.spec)
            if shadow is not None and self.in_shadow(candidate, shadow, analysis):
                return
            st.shadow_percent, st.step_started_at = None, None  # passed, or taken out of the spec: the steps
        if strategy.type == "Canary" and strategy.canary is not None:
            steps = strategy.canary.steps
            index = min(st.step or 0, len(steps) - 1)
            desired, pause = steps[index].weight, seconds(steps[index].pause)
            where = f"step {index + 1}/{len(steps)}"
        else:
            desired, pause, where = strategy.blue_green.preview_weight, 0.0, "preview"
        if st.canary_weight != desired:
            st.canary_weight, st.step_started_at = desired, None
        if self.applied(candidate) != desired:
            st.step_started_at = None  # not (or no longer) in effect: the step starts once it is
            self.state("Progressing", reasons.ROLLING_OUT, f"{where}: setting {desired}% on version {candidate}")
            return
        if st.step_started_at is None:
            st.step_started_at = self.stamp
        if self.obs.analysis is not None and self.record_analysis(candidate, analysis):
            return  # rolled back
        if not self.step_passed(analysis, pause):
            if not _awaiting_promotion(st):
                self.state("Progressing", self.analysis_reason(), self.step_message(where, desired, pause, analysis))
            return
        self.stage_passed(candidate, where)

    def in_shadow(self, candidate: int, shadow: Shadow, analysis: Analysis) -> bool:
        """The shadow stage: no user traffic, a mirror of `shadow.percent`; True while it lasts.

        BlueGreen without preview traffic stays in it, mirroring, while it awaits promotion.
        """
        st = self.st
        if st.shadow_percent != shadow.percent:
            st.shadow_percent, st.step_started_at = shadow.percent, None
        st.canary_weight = 0
        if self.applied(candidate) != 0 or self.mirrored(candidate) != shadow.percent:
            st.step_started_at = None  # not (or no longer) in effect: the stage starts once it is
            self.state(
                "Progressing", reasons.ROLLING_OUT, f"shadow: mirroring {shadow.percent}% to version {candidate}"
            )
            return True
        if st.step_started_at is None:
            st.step_started_at = self.stamp
        if self.obs.analysis is not None and self.record_analysis(candidate, analysis, "shadow: "):
            return True  # rolled back
        duration = seconds(shadow.duration)
        if not self.step_passed(analysis, duration):
            if not _awaiting_promotion(st):
                message = self.step_message("shadow", shadow.percent, duration, analysis, "mirrored to")
                self.state("Progressing", self.analysis_reason(), message)
            return True
        blue_green = self.spec.strategy.type == "BlueGreen"
        if blue_green and self.spec.strategy.blue_green.preview_weight == 0:
            if not _awaiting_promotion(st):
                self.event(False, reasons.SHADOW_PASSED, f"shadow passed; version {candidate} had no user traffic")
            self.stage_passed(candidate, "shadow")
            return True
        self.event(False, reasons.SHADOW_PASSED, f"shadow passed; version {candidate} starts taking user traffic")
        return False

    def stage_passed(self, candidate: int, where: str) -> None:
        """The current step, preview or shadow passed: the next step, or the switch."""
        st, strategy = self.st, self.spec.strategy
        if strategy.type == "Canary" and strategy.canary is not None:
            if (st.step or 0) + 1 < len(strategy.canary.steps):
                st.step = (st.step or 0) + 1
                weight = strategy.canary.steps[st.step].weight
                st.canary_weight, st.step_started_at = weight, None
                self.event(False, reasons.STEP_ADVANCED, f"{where} passed; version {candidate} goes to {weight}%")
                self.state("Progressing", reasons.STEP_ADVANCED, f"setting {weight}% on version {candidate}")
            else:
                self.promote(candidate, "passed every step")
        elif strategy.blue_green.auto_promote:
            self.promote(candidate, "analysis passed; switched")
        else:
            if not _awaiting_promotion(st):
                self.event(False, reasons.AWAITING_PROMOTION, f"version {candidate} passed analysis")
            self.state(
                "Paused",
                reasons.AWAITING_PROMOTION,
                f"version {candidate} passed analysis; `kubectl slipway promote` switches traffic to it",
            )

    def record_analysis(self, candidate: int, analysis: Analysis, stage: str = "") -> bool:
        """Store a measurement; True when it rolled the candidate back (`stage` prefixes the reason)."""
        st, results = self.st, self.obs.analysis or []
        st.analysis, st.last_analysis_at = results, self.stamp
        verdict = overall(results)
        if verdict == "Failed":
            st.analysis_failures += 1
            failing = "; ".join(f"{r.metric} {r.message}" for r in results if r.verdict == "Failed")
            count = f"failure {st.analysis_failures} of {analysis.failure_limit + 1} allowed to end it"
            self.event(True, reasons.ANALYSIS_FAILED, f"version {candidate}: {stage}{failing} ({count})")
            if st.analysis_failures > analysis.failure_limit:
                self.rollback(reasons.ANALYSIS_FAILED, stage + failing)
                return True
        elif verdict == "Inconclusive":
            st.analysis_inconclusive += 1
            why = "; ".join(f"{r.metric}: {r.message}" for r in results if r.verdict == "Inconclusive")
            self.event(True, reasons.ANALYSIS_INCONCLUSIVE, f"version {candidate}: holding; {why}")
        return False

    def step_passed(self, analysis: Analysis, pause: float) -> bool:
        st = self.st
        started = parse_time(st.step_started_at or self.stamp)
        if self.now < started + timedelta(seconds=pause):
            return False
        if not analysis.metrics:
            return True
        # A measurement counts for this step only if its whole window saw this step's weight.
        if st.last_analysis_at is None or not st.analysis:
            return False
        measured = parse_time(st.last_analysis_at)
        return measured >= started + timedelta(seconds=seconds(analysis.interval)) and overall(st.analysis) == "Passed"

    def analysis_reason(self) -> str:
        if self.st.analysis and overall(self.st.analysis) == "Inconclusive":
            return reasons.ANALYSIS_INCONCLUSIVE
        return reasons.ROLLING_OUT

    def step_message(self, where: str, weight: int, pause: float, analysis: Analysis, how: str = "on") -> str:
        st = self.st
        started = parse_time(st.step_started_at or self.stamp)
        left = (started + timedelta(seconds=pause) - self.now).total_seconds()
        doing = f"pausing {left:.0f}s more" if left > 0 else "analysing"
        if st.analysis and overall(st.analysis) == "Inconclusive":
            doing = "holding: the last measurement was inconclusive"
        counts = ""
        if analysis.metrics:
            counts = (
                f" (failures {st.analysis_failures}/{analysis.failure_limit}, inconclusive {st.analysis_inconclusive})"
            )
        return f"{where}: {weight}% {how} version {st.candidate_version}, {doing}{counts}"

    # -- outcomes ----------------------------------------------------------------------------------
    def promote(self, candidate: int, why: str) -> None:
        st = self.st
        old, old_predictor = st.stable_version, st.stable_predictor
        self.history(candidate, "Promoted", why)
        st.stable_version = candidate
        st.stable_predictor = record_predictor(self.spec.predictor)  # what the candidate ran with
        self.clear_candidate()
        if old is not None and old != candidate:
            delay = self.spec.strategy.blue_green.scale_down_delay if self.spec.strategy.type == "BlueGreen" else None
            st.previous_version, st.previous_predictor = old, old_predictor
            st.scale_down_at = rfc3339(self.now + timedelta(seconds=seconds(delay) if delay else DRAIN_SECONDS))
        self.event(False, reasons.PROMOTED, f"version {candidate} {why}; it serves all traffic")
        self.state("Stable", reasons.PROMOTED, f"serving version {candidate} ({why})")

    def rollback(self, reason: str, why: str) -> None:
        st = self.st
        candidate = st.candidate_version
        if candidate is None:
            return
        self.history(candidate, "RolledBack", f"{reason}: {why}")
        st.rolled_back_version, st.rolled_back_generation = candidate, self.generation
        self.clear_candidate()
        if st.stable_version is None:
            self.event(True, reason, f"version {candidate} failed: {why}")
            self.state("Failed", reason, f"version {candidate} failed: {why}; nothing is serving")
            return
        self.event(True, reason, f"version {candidate} rolled back: {why}")
        self.state(
            "RollingBack",
            reason,
            f"version {candidate} rolled back ({why}); version {st.stable_version} takes all traffic",
        )

    def switch_back(self) -> None:
        """Blue-green abort after the switch: the old version is still warm, so it is instant."""
        st = self.st
        bad, good = st.stable_version, st.previous_version
        if bad is None or good is None:
            return
        self.history(bad, "RolledBack", f"{reasons.ABORTED}: aborted by a user after promotion")
        st.rolled_back_version, st.rolled_back_generation = bad, self.generation
        st.stable_version, st.previous_version, st.scale_down_at = good, None, None
        st.stable_predictor, st.previous_predictor = st.previous_predictor, None
        self.event(True, reasons.ABORTED, f"switched back to version {good}; version {bad} aborted by a user")
        self.state("RollingBack", reasons.ABORTED, f"version {bad} aborted by a user; switching back to version {good}")

    def settle_without_candidate(self) -> None:
        st = self.st
        if st.phase == "RollingBack":
            bad = st.rolled_back_version
            if bad is not None and self.applied(bad) == 0 and self.obs.applied:
                self.state("Degraded", st.reason, st.message.replace("takes all traffic", "has all traffic"))
            return
        if st.phase in ("Degraded", "Failed"):
            return
        if st.stable_version is not None:
            if st.phase != "Stable":
                self.state("Stable", reasons.ENDPOINT_READY, f"serving version {st.stable_version}")
            elif not st.message:
                st.message = f"serving version {st.stable_version}"

    def scale_down(self) -> None:
        st = self.st
        if st.scale_down_at is not None and self.now >= parse_time(st.scale_down_at):
            st.previous_version = st.scale_down_at = None
        if st.previous_version is None:
            st.previous_predictor = None

    def record_predictors(self) -> None:
        """The stable version's settings follow the spec only while the spec asks for it (see
        predictors): during a rollout, and after a rollback, it keeps what it was promoted with."""
        st = self.st
        if st.stable_version is not None and st.candidate_version is None and self.obs.target == st.stable_version:
            st.stable_predictor = record_predictor(self.spec.predictor)

    # -- conditions --------------------------------------------------------------------------------
    def finish(self) -> Decision:
        st, gen, stamp = self.st, self.generation, self.stamp
        stable = self.obs.endpoints.get(st.stable_version) if st.stable_version is not None else None
        ready: tuple[ConditionStatus, str, str]
        if stable is not None and stable.ready:
            ready = ("True", reasons.ENDPOINT_READY, f"version {st.stable_version} is serving")
        elif st.stable_version is not None:
            ready = (
                "False",
                reasons.ENDPOINT_NOT_READY,
                f"version {st.stable_version}: {stable.detail if stable else ''}",
            )
        else:
            ready = ("False", st.reason or reasons.ROLLING_OUT, st.message)
        st.conditions = set_condition(st.conditions, "Ready", ready[0], ready[1], ready[2], gen, stamp)
        active = st.phase in ACTIVE_PHASES
        st.conditions = set_condition(
            st.conditions, "Progressing", "True" if active else "False", st.reason or "Idle", st.message, gen, stamp
        )
        if st.analysis:
            verdict = overall(st.analysis)
            status = VERDICT_STATUS[verdict]
            detail = "; ".join(
                f"{r.metric}={'-' if r.value is None else f'{r.value:g}'} {r.verdict}: {r.message}" for r in st.analysis
            )
            message = f"{detail} (failures {st.analysis_failures}, inconclusive {st.analysis_inconclusive})"
            st.conditions = set_condition(
                st.conditions,
                "Analysis",
                status,
                f"Analysis{verdict}",
                message,
                gen,
                stamp,
            )
        st.observed_generation = self.generation or None
        return Decision(st, traffic_of(st), self.events)
