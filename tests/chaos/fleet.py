"""The work the chaos tests put the operator through: models trained and rolled out, many at once.

Each model has a ModelDeployment on `version: latest` and a hand-registered version 1. A rollout
is the platform's own path: a TrainingRun, its RayJob finished the way KubeRay finishes it, the
ModelVersion the operator registers, and the canary the deployment starts for it by itself.
Some runs are bad ("-bad" in the run's name, so in the artifact URI): by default their
InferenceService never gets ready (KServe is played by `Controllers`), and the progress deadline
must roll them back; a test may play them otherwise (its own `Controllers`, its analysis: see
test_prometheus_flaps.py, where they get ready and their metrics fail the analysis).
"""

from __future__ import annotations

import copy
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from slipway.controlplane.server import free_port
from tests.chaos.invariants import SLIPWAY, UNREACHABLE, Invariants
from tests.support import Cluster, Controllers, contract_manifests, wait_for, write_manifest

TR, MV, MD = contract_manifests()
# Seeds every random choice of a chaos test (which runs are bad, when faults strike); printed.
SEED_ENV = "SLIPWAY_CHAOS_SEED"
# What each test reports; printed at the end of the session (tests/chaos/conftest.py).
FIGURES: list[str] = []
# Short pauses and no analysis metrics (Prometheus is not asked): a rollout takes seconds.
STEPS = ((30, "1s"), (70, "1s"))
NO_ANALYSIS: dict[str, Any] = {"interval": "1s", "failureLimit": 0, "metrics": []}


def chaos_seed() -> int:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1, 2**31))
    print(f"chaos seed: {seed} (set {SEED_ENV}={seed} to choose the same faults again)")
    return seed


class ChaosControllers(Controllers):
    """KServe and a Gateway; an InferenceService of a bad run's artifact never gets ready."""

    def _isvc_status(self, isvc: dict[str, Any]) -> dict[str, Any]:
        if "-bad" in json.dumps(isvc["spec"]):
            self.broken.add(isvc["metadata"]["name"])
        return super()._isvc_status(isvc)


def deployment(
    model: str, steps: tuple[tuple[int, str], ...], deadline: str, prometheus: str, analysis: dict[str, Any]
) -> dict[str, Any]:
    md = copy.deepcopy(MD)
    md["metadata"]["name"] = model
    md["spec"].update(model=model, version="latest", traffic="gateway", prometheus={"url": prometheus})
    md["spec"]["strategy"] = {
        "type": "Canary",
        "progressDeadline": deadline,
        "canary": {"steps": [{"weight": w, "pause": p} for w, p in steps], "analysis": copy.deepcopy(analysis)},
    }
    return md


def first_version(model: str) -> dict[str, Any]:
    mv = copy.deepcopy(MV)
    mv["metadata"]["name"] = f"{model}-v1"
    mv["spec"].update(model=model, version=1, uri=f"s3://models/{model}/1/")
    del mv["spec"]["trainingRun"]  # registered by hand
    return mv


def training_run(model: str, name: str, artifacts: Path) -> dict[str, Any]:
    tr = copy.deepcopy(TR)
    tr["metadata"]["name"] = name
    tr["spec"].update(model=model, backoffLimit=0)
    tr["spec"]["artifacts"]["uri"] = f"file://{artifacts}/"
    tr["spec"]["evaluation"]["mustBeatServing"] = False
    return tr


@dataclass
class Outcome:
    run: str
    bad: bool
    version: int = 0
    result: str = ""  # Promoted, RolledBack, or what it was stuck in
    reason: str = ""  # the history entry's reason, e.g. "AnalysisFailed: error-rate 0.5 > max 0.05"
    seconds: float = 0.0


@dataclass
class Fleet:
    """Drives `rollouts` rollouts of each model, one after another per model, all models at once."""

    cluster: Cluster
    namespace: str
    artifacts: Path
    models: list[str]
    rollouts: int
    rng: random.Random
    bad_every: int = 4  # about one run in this many is bad
    deadline: float = 90.0  # each rollout must end within this (faults included)
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: Counter[str] = field(default_factory=Counter)  # runs started per model

    def create(self, plural: str, body: dict[str, Any]) -> None:
        body = copy.deepcopy(body)
        body["metadata"]["namespace"] = self.namespace
        self.retrying(
            lambda: self.cluster.custom.create_namespaced_custom_object(*SLIPWAY, self.namespace, plural, body)
        )

    def get(self, plural: str, name: str) -> dict[str, Any]:
        got: dict[str, Any] = self.retrying(
            lambda: self.cluster.custom.get_namespaced_custom_object(
                *SLIPWAY, self.namespace, plural, name, _request_timeout=10
            )
        )
        return got

    def retrying(self, call: Callable[[], Any], timeout: float = 60) -> Any:
        """A call that survives an API server restart (the tests' own calls are not under test)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return call()
            except ApiException as error:
                if error.status == 409:  # made by an earlier try that lost its answer
                    return None
                if (error.status and error.status < 500) or time.monotonic() > deadline:
                    raise
            except UNREACHABLE:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def poll(
        self, probe: Callable[[], Any], timeout: float, what: str, explain: Callable[[], Any] | None = None
    ) -> Any:
        try:
            return wait_for(probe, timeout=timeout, what=what)
        except AssertionError as error:  # say where it stopped, not only that it did
            raise AssertionError(f"{error}; {explain() if explain else ''}") from None

    def start(
        self,
        prometheus: str,
        steps: tuple[tuple[int, str], ...],
        progress_deadline: str,
        analysis: dict[str, Any] = NO_ANALYSIS,
    ) -> None:
        """Every model serving its version 1."""
        for model in self.models:
            self.create("modelversions", first_version(model))
            self.create("modeldeployments", deployment(model, steps, progress_deadline, prometheus, analysis))
        for model in self.models:
            self.poll(
                lambda m=model: (
                    (s := self.get("modeldeployments", m).get("status") or {}).get("phase") == "Stable"
                    and s.get("stableVersion") == 1
                ),
                timeout=120,
                what=f"{model} stable on version 1",
            )

    def run(self) -> None:
        """`rollouts` more rollouts of every model, one thread per model; returns when all ended."""
        self.join(self.start_rollouts())

    def start_rollouts(self) -> list[threading.Thread]:
        threads = []
        for model in self.models:
            threads.append(threading.Thread(target=self._model, args=(model, self.plan()), daemon=True))
            threads[-1].start()
        return threads

    def plan(self) -> list[bool]:
        """One model's runs in order, True for a bad one."""
        return [self.rng.randrange(self.bad_every) == 0 for _ in range(self.rollouts)]

    def join(self, threads: list[threading.Thread]) -> None:
        for thread in threads:
            thread.join(timeout=self.deadline * self.rollouts + 60)

    def _model(self, model: str, plan: list[bool]) -> None:
        try:
            for bad in plan:
                index = self.started[model]
                self.started[model] += 1
                self.outcomes.append(self._rollout(model, f"{model}-r{index}{'-bad' if bad else ''}", bad))
        except AssertionError as error:
            self.errors.append(f"{model}: {error}")
        except Exception as error:  # a thread's exception would otherwise pass unseen
            self.errors.append(f"{model}: {type(error).__name__}: {error}")

    def _rollout(self, model: str, run: str, bad: bool) -> Outcome:
        started = time.monotonic()
        outcome = Outcome(run, bad)
        write_manifest(self.artifacts, run, auc=0.9)
        self.create("trainingruns", training_run(model, run, self.artifacts))
        job = f"{run}-0"
        self.poll(lambda: self._rayjob(job), timeout=self.deadline, what=f"RayJob {job}")
        finished = {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete", "endTime": "2026-11-22T10:00:00Z"}
        self.retrying(
            lambda: self.cluster.custom.patch_namespaced_custom_object_status(
                "ray.io", "v1", self.namespace, "rayjobs", job, {"status": finished}
            )
        )
        registered = self.poll(
            lambda: (s := self.get("trainingruns", run).get("status") or {}).get("phase") == "Succeeded" and s,
            timeout=self.deadline,
            what=f"run {run} Succeeded",
            explain=lambda: self.get("trainingruns", run).get("status"),
        )
        outcome.version = int(registered["modelVersion"].rsplit("-v", 1)[1])

        def ended() -> str | None:
            status = self.get("modeldeployments", model).get("status") or {}
            if status.get("phase") == "Stable" and status.get("stableVersion") == outcome.version:
                result = "Promoted"
            elif status.get("phase") == "Degraded" and status.get("rolledBackVersion") == outcome.version:
                result = "RolledBack"
            else:
                return None
            entries = [h for h in status.get("history", []) if h["version"] == outcome.version]
            outcome.reason = entries[-1].get("reason", "") if entries else ""
            return result

        def explain() -> str:
            status = self.get("modeldeployments", model).get("status") or {}
            brief = {k: v for k, v in status.items() if k not in ("conditions", "stablePredictor", "history")}
            return f"status: {brief}; history: {status.get('history')}"

        left = self.deadline - (time.monotonic() - started)
        what = f"{model}'s rollout of {run} to end"
        outcome.result = self.poll(ended, timeout=max(left, 1), what=what, explain=explain)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _rayjob(self, name: str) -> bool:
        try:
            self.cluster.custom.get_namespaced_custom_object(
                "ray.io", "v1", self.namespace, "rayjobs", name, _request_timeout=10
            )
        except ApiException as error:
            # 404: not made yet; 5xx: an API server still starting ("before all known HTTP paths
            # have been installed"), as `retrying` takes it.
            if error.status == 404 or (error.status or 0) >= 500:
                return False
            raise
        except UNREACHABLE:
            return False
        return True

    def summary(self) -> str:
        promoted = sum(o.result == "Promoted" for o in self.outcomes)
        rolled = sum(o.result == "RolledBack" for o in self.outcomes)
        good_rolled = sum(o.result == "RolledBack" and not o.bad for o in self.outcomes)
        slowest = max((o.seconds for o in self.outcomes), default=0.0)
        return (
            f"{len(self.outcomes)} rollouts ended ({promoted} promoted, {rolled} rolled back, of which "
            f"{good_rolled} good versions rolled back by their deadline); slowest {slowest:.1f}s"
        )


class Fault:
    """A thread that strikes (`strike`) at moments of its own choosing until told to stop."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.strike, name=type(self).__name__, daemon=True)

    def strike(self) -> None:
        raise NotImplementedError


def run_under(
    fault: Fault,
    fleet: Fleet,
    progress_deadline: str,
    *,
    controllers: Controllers | None = None,
    watcher: Invariants | None = None,
    prometheus: str = "",
    analysis: dict[str, Any] = NO_ANALYSIS,
) -> Invariants:
    """Every model on its first version, then the fleet's rollouts with `fault` striking; KServe
    and the Gateway played, and the invariants checked, throughout. By default bad runs never get
    ready and no Prometheus is asked (a URL nothing listens on, no metrics)."""
    controllers = controllers or ChaosControllers(fleet.cluster, fleet.namespace)
    controllers.thread.start()
    watcher = (watcher or Invariants(fleet.cluster, fleet.namespace)).start()
    try:
        fleet.start(prometheus or f"http://127.0.0.1:{free_port()}", STEPS, progress_deadline, analysis)
        fault.thread.start()
        fleet.run()
    finally:
        fault.stop.set()
        fault.thread.join(timeout=150)
        watcher.stop()
        controllers.stop.set()
        controllers.thread.join(timeout=5)
    return watcher


def assert_held(fleet: Fleet, watcher: Invariants) -> None:
    """Every rollout ended, no invariant broke, no bad version was promoted, one RayJob a run
    (none is retried here), and each run's version number its own."""
    assert not fleet.errors, "\n".join(fleet.errors + watcher.violations)
    assert not watcher.violations, "\n".join(watcher.violations)
    assert len(fleet.outcomes) == len(fleet.models) * fleet.rollouts, fleet.outcomes
    assert not [o for o in fleet.outcomes if o.bad and o.result != "RolledBack"], fleet.outcomes
    assert set(watcher.max_rayjobs.values()) == {1}, watcher.max_rayjobs
    numbers = [(o.run.split("-")[0], o.version) for o in fleet.outcomes]
    assert len(set(numbers)) == len(numbers), numbers
