"""Prometheus flapping while canaries are analysed: killed, stopped, hung, and back, at random moments.

A real Prometheus (the dev stack's `LocalPrometheus`) scrapes a small exporter that plays the
model servers: the series the built-in `error-rate` query reads (`slipway_requests_total` by
`model`, `revision` and `outcome`; the scrape adds `namespace`), for every version whose
InferenceService KServe (played by `Controllers`) made ready. A good version fails 1% of its
requests, a bad one ("-bad" in its run's name) 50%; the counters grow with time, so `rate()` works.
Every deployment analyses `error-rate` (max 5%) every 2 s with no failure tolerated.

Meanwhile Prometheus flaps: at seeded moments (SLIPWAY_CHAOS_SEED) it is SIGKILLed, SIGTERMed or
SIGSTOPped (hung: a query waits for the client's timeout), stays so a few seconds, and is started
or continued again. A measurement it cannot answer is Inconclusive, which must hold a rollout and
never move it: a good version is never rolled back for want of data, a bad one never promoted
for want of it, and a bad one is rolled back by its analysis (AnalysisFailed), not by a deadline.
Besides the fleet's invariants, every round checks each measurement the status shows: its
verdict against the version (no Failed for a good one, no Passed for a bad one), the Analysis
condition against it (Inconclusive is Unknown, never True or False), and that a rollout ended on
a Passed (promoted) or Failed (rolled back) one, never on an Inconclusive one.

Most Inconclusive measurements are "no data", not failed queries: a restarted Prometheus scrapes
again only once its service discovery hands the targets over (about 5 s after it is ready), and a
hung one missed the scrapes of its window. An Inconclusive measurement has no deadline of its own (the
progress deadline covers readiness only), so the rollouts end because Prometheus comes back.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from slipway.api.resources import DEPLOYMENT_LABEL, VERSION_LABEL
from slipway.devstack.prometheus import JOB, LocalPrometheus, ScrapeTarget, write_targets
from slipway.prometheus import value_of
from tests.chaos.fleet import FIGURES, Fault, Fleet, assert_held, chaos_seed, run_under
from tests.chaos.invariants import SLIPWAY, Invariants
from tests.support import Cluster, Controllers

pytestmark = pytest.mark.integration

MODELS = 2
ROLLOUTS_PER_MODEL = 4
# Scrapes every 0.5 s, so the 2 s window of each measurement holds about four samples per series.
SCRAPE_INTERVAL = "500ms"
MAX_ERROR_RATE = 0.05
ANALYSIS = {"interval": "2s", "failureLimit": 0, "metrics": [{"name": "error-rate", "max": MAX_ERROR_RATE}]}
REQUESTS_PER_SECOND = 20.0
ERROR_SHARE = {False: 0.01, True: 0.5}  # good, bad
# Prometheus is up a few seconds, then down (killed or hung) a few seconds, over and over.
UP = (1.5, 6.0)
DOWN = (1.0, 6.0)
# Hung (SIGSTOP, then SIGCONT): often longer than the client's 5 s timeout, so some queries time out.
HUNG = (3.0, 8.0)
HOW = ("SIGKILL", "SIGTERM", "SIGSTOP")
SCRAPED = f'count_over_time(up{{job="{JOB}"}}[1s])'
VERDICT_STATUS = {"Passed": "True", "Failed": "False", "Inconclusive": "Unknown"}


@dataclass
class Revision:
    model: str
    revision: str
    bad: bool
    since: float = field(default_factory=time.monotonic)


class ModelServers(Collector):
    """The model servers' request counters, computed at scrape time from how long each has served:
    they only grow, at REQUESTS_PER_SECOND, with the version's share of server errors."""

    def __init__(self) -> None:
        self.revisions: dict[tuple[str, str], Revision] = {}
        self.lock = threading.Lock()

    def serve(self, model: str, revision: str, bad: bool) -> None:
        with self.lock:
            self.revisions.setdefault((model, revision), Revision(model, revision, bad))

    def bad(self, model: str, revision: int) -> bool | None:
        """Whether the version is bad; None while it serves nothing."""
        with self.lock:
            known = self.revisions.get((model, str(revision)))
        return None if known is None else known.bad

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "slipway_requests_total", "Predict/infer HTTP requests by outcome.", labels=["model", "revision", "outcome"]
        )
        now = time.monotonic()
        with self.lock:
            revisions = list(self.revisions.values())
        for r in revisions:
            total = (now - r.since) * REQUESTS_PER_SECOND
            errors = total * ERROR_SHARE[r.bad]
            for outcome, value in (("success", total - errors), ("client_error", 0.0), ("server_error", errors)):
                family.add_metric([r.model, r.revision, outcome], value)
        yield family


class ServingControllers(Controllers):
    """KServe and a Gateway, every InferenceService ready; a ready version starts serving (and
    exporting its metrics), a bad run's with many errors."""

    def __init__(self, cluster: Cluster, namespace: str, servers: ModelServers) -> None:
        super().__init__(cluster, namespace)
        self.servers = servers

    def _isvc_status(self, isvc: dict[str, Any]) -> dict[str, Any]:
        labels = isvc["metadata"].get("labels", {})
        bad = "-bad" in json.dumps(isvc["spec"])  # the run's name is in the artifact's URI
        self.servers.serve(labels[DEPLOYMENT_LABEL], labels[VERSION_LABEL], bad)
        return super()._isvc_status(isvc)


class Flapper(Fault):
    """Takes Prometheus down (SIGKILL, SIGTERM, or SIGSTOP: hung) and brings it back, over and over.

    It is up again once it scrapes again: a restarted Prometheus is ready seconds before its service
    discovery hands it the targets, and counting that as up would leave some flaps no window with data.
    """

    def __init__(self, prometheus: LocalPrometheus, rng: random.Random) -> None:
        super().__init__(rng)
        self.prometheus = prometheus
        self.flaps: Counter[str] = Counter()
        self.down_seconds = 0.0

    def strike(self) -> None:
        while not self.stop.wait(self.rng.uniform(*UP)):
            how = self.rng.choice(HOW)
            down = self.rng.uniform(*(HUNG if how == "SIGSTOP" else DOWN))
            proc = self.prometheus.proc
            assert proc is not None
            began = time.monotonic()
            if how == "SIGSTOP":
                proc.send_signal(signal.SIGSTOP)
                self.stop.wait(down)
                proc.send_signal(signal.SIGCONT)
            else:
                proc.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM)
                proc.wait(timeout=30)
                self.prometheus.stop()  # closes its log
                self.stop.wait(down)
                self.prometheus.start()  # same port, same data; returns once it is ready
            self.flaps[how] += 1
            self.wait_scraping()
            self.down_seconds += time.monotonic() - began

    def wait_scraping(self, timeout: float = 60) -> None:
        """Until the last second holds a scrape (the last one before the flap is older than that)."""
        deadline = time.monotonic() + timeout
        while value_of(self.prometheus.url, SCRAPED)[0] is None:
            assert time.monotonic() < deadline, f"Prometheus did not scrape within {timeout}s of coming back"
            if self.stop.wait(0.1):
                return

    def report(self) -> str:
        kinds = ", ".join(f"{n} {how}" for how, n in sorted(self.flaps.items()))
        return f"{sum(self.flaps.values())} flaps ({kinds}; down {self.down_seconds:.0f}s in all)"


@dataclass
class AnalysisInvariants(Invariants):
    """The fleet's invariants, and each measurement a round sees judged against its version."""

    servers: ModelServers = field(default_factory=ModelServers)
    verdicts: Counter[str] = field(default_factory=Counter)  # measurements seen, by verdict
    # Inconclusive measurements whose query failed, by cause: "refused" (down) or "timed out" (hung)
    failed_queries: Counter[str] = field(default_factory=Counter)
    inconclusive: dict[tuple[str, int], int] = field(default_factory=dict)  # per rollout, status' counter
    seen: set[tuple[str, int, str]] = field(default_factory=set)

    def _round(self) -> None:
        super()._round()
        for md in self._list(SLIPWAY, "modeldeployments"):
            self._check_analysis(md["metadata"]["name"], md.get("status") or {})

    def _check_analysis(self, name: str, status: dict[str, Any]) -> None:
        for entry in status.get("history", []):
            if entry["outcome"] == "Promoted" and self.servers.bad(name, int(entry["version"])):
                self._violation(f"deployment {name}: bad version {entry['version']} promoted: {entry}")
        results, history = status.get("analysis") or [], status.get("history", [])
        if not results:
            return
        # The results are the rollout's under way, or, once it ended (the measurement that ended it
        # is kept until the next one starts), the last history entry's.
        candidate = status.get("candidateVersion")
        version = int(candidate if candidate is not None else history[-1]["version"])
        key = (name, version)
        self.inconclusive[key] = max(self.inconclusive.get(key, 0), int(status.get("analysisInconclusive", 0)))
        verdict = _overall([r["verdict"] for r in results])
        condition = next((c for c in status.get("conditions", []) if c["type"] == "Analysis"), None)
        if condition is None or condition["status"] != VERDICT_STATUS[verdict]:
            self._violation(f"deployment {name}: measurement {verdict}, but Analysis condition {condition}")
        if candidate is None:  # what ended the rollout was its last measurement, Passed or Failed
            ended = history[-1]
            expected = "Passed" if ended["outcome"] == "Promoted" else "Failed"
            if ended["outcome"] in ("Promoted", "RolledBack") and verdict != expected:
                self._violation(f"deployment {name}: {ended} on a measurement {verdict}: {results}")
        measured = (name, version, str(status.get("lastAnalysisAt")))
        if measured in self.seen:
            return
        self.seen.add(measured)
        self.verdicts[verdict] += 1
        for r in results:
            if r["message"].startswith("query failed"):
                # With no retries, the client reports a read timeout as a ConnectionError too.
                cause = next((c for c in ("refused", "timed out") if c in r["message"]), r["message"][:60])
                self.failed_queries[cause] += 1
        bad = self.servers.bad(name, version)
        if (verdict == "Failed" and bad is not True) or (verdict == "Passed" and bad is not False):
            self._violation(f"deployment {name}: version {version} ({'bad' if bad else 'good'}) {verdict}: {results}")

    def analysis_report(self) -> str:
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(self.verdicts.items()))
        return (
            f"measurements seen: {verdicts} (queries failed: {dict(self.failed_queries)}; "
            "the other Inconclusive ones found no data: a window the scrapes missed); "
            f"analysisInconclusive summed over rollouts: {sum(self.inconclusive.values())}"
        )


def _overall(verdicts: list[str]) -> str:
    for verdict in ("Failed", "Inconclusive"):
        if verdict in verdicts:
            return verdict
    return "Passed"


class AtLeastOneBad(Fleet):
    """Every model has a bad run (at a seeded place) besides its random ones."""

    def plan(self) -> list[bool]:
        plan = super().plan()
        plan[self.rng.randrange(self.rollouts)] = True
        return plan


def test_prometheus_flapping_during_analysis(operator: Cluster, namespace: str, tmp_path: Path) -> None:
    seed = chaos_seed()
    rng = random.Random(seed)
    servers = ModelServers()
    registry = CollectorRegistry()
    registry.register(servers)
    exporter, _ = start_http_server(0, "127.0.0.1", registry)
    prometheus = LocalPrometheus(tmp_path / "prometheus", scrape_interval=SCRAPE_INTERVAL)
    prometheus.workdir.mkdir()
    address = f"127.0.0.1:{exporter.server_address[1]}"
    write_targets(prometheus.targets_file, [ScrapeTarget(address, namespace, "model-servers", "model-servers-0")])
    prometheus.start()
    models = [f"p{i}" for i in range(MODELS)]
    fleet = AtLeastOneBad(operator, namespace, tmp_path / "runs", models, ROLLOUTS_PER_MODEL, rng, deadline=150)
    fleet.artifacts.mkdir()
    flapper = Flapper(prometheus, random.Random(seed + 1))  # its own stream: it runs beside the fleet's threads
    watcher = AnalysisInvariants(operator, namespace, servers=servers)
    started = time.monotonic()
    try:
        run_under(
            flapper,
            fleet,
            progress_deadline="30s",
            controllers=ServingControllers(operator, namespace, servers),
            watcher=watcher,
            prometheus=prometheus.url,
            analysis=ANALYSIS,
        )
    finally:
        if prometheus.proc is not None and prometheus.proc.poll() is None:
            prometheus.proc.send_signal(signal.SIGCONT)  # never leave it hung
        prometheus.stop()
        exporter.shutdown()
    elapsed = time.monotonic() - started
    reasons = Counter(o.reason.split(":")[0] for o in fleet.outcomes if o.result == "RolledBack")
    FIGURES.append(
        f"Prometheus flaps: {flapper.report()} in {elapsed:.0f}s; {fleet.summary()}; rollbacks by reason "
        f"{dict(reasons)}; {watcher.analysis_report()}; {watcher.report()}"
    )
    print(FIGURES[-1])
    assert sum(flapper.flaps.values()) >= 2, f"only {flapper.report()}: the faults did not happen"
    assert_held(fleet, watcher)
    assert not [o for o in fleet.outcomes if not o.bad and o.result != "Promoted"], fleet.outcomes
    assert not [o for o in fleet.outcomes if o.bad and not o.reason.startswith("AnalysisFailed")], fleet.outcomes
    assert watcher.verdicts["Inconclusive"] > 0, "no measurement was inconclusive: the flaps missed the analysis"
