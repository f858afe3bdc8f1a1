"""kube-apiserver restarted (etcd kept) while models are trained and rolled out.

Every watch the operator holds breaks, and every call in flight fails, mid-rollout and
mid-training (runs between their RayJob and their ModelVersion). The API server is SIGKILLed (a crash)
and started again at once; the restarts are seeded like the kills (SLIPWAY_CHAOS_SEED). For a few
seconds after it is back it answers 403 (its authorizer still loading the RBAC rules) and 503: the
operator's calls wait out refused connections, its event handlers try again through those answers
(`handlers/retries.py`), a failed rollout tick is tried again in 2 s and other handlers
in 10 s. The invariants are checked throughout; rounds that find the API server down are
counted apart, and the first round after it is back checks everything again.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.chaos.fleet import FIGURES, Fault, Fleet, assert_held, chaos_seed, run_under
from tests.chaos.invariants import SLIPWAY, UNREACHABLE
from tests.support import Cluster

pytestmark = pytest.mark.integration

MODELS = 2
ROLLOUTS_PER_MODEL = 2  # every run good: bad versions and their deadlines are the kill test's
RESTARTS = 2
RESTART_EVERY = (0.5, 3.0)  # seconds after the last restart before looking for work under way


class Restarter(Fault):
    """Restarts the API server at a random moment while a rollout or a training run is under way."""

    def __init__(self, cluster: Cluster, namespace: str, rng: random.Random) -> None:
        super().__init__(rng)
        self.cluster, self.namespace = cluster, namespace
        self.restarts = 0
        self.downtime: list[float] = []
        self.during: list[str] = []

    def under_way(self) -> str:
        """What is in flight now: a deployment Progressing, or a run not yet registered."""
        custom, ns = self.cluster.custom, self.namespace
        try:
            deployments = custom.list_namespaced_custom_object(*SLIPWAY, ns, "modeldeployments")["items"]
            runs = custom.list_namespaced_custom_object(*SLIPWAY, ns, "trainingruns")["items"]
        except UNREACHABLE:  # still coming back from the last restart
            return ""
        for md in deployments:
            if (md.get("status") or {}).get("phase") == "Progressing":
                return f"rollout of {md['metadata']['name']}"
        for run in runs:
            if (run.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                return f"training run {run['metadata']['name']}"
        return ""

    def strike(self) -> None:
        while self.restarts < RESTARTS and not self.stop.wait(self.rng.uniform(*RESTART_EVERY)):
            doing = ""
            while not doing and not self.stop.is_set():
                doing = self.under_way()
                self.stop.wait(0.1)
            if self.stop.is_set():
                return
            began = time.monotonic()
            self.cluster.plane.restart_apiserver()
            self.downtime.append(time.monotonic() - began)
            self.during.append(doing)
            self.restarts += 1


def test_apiserver_restarted_mid_rollout_and_mid_training(operator: Cluster, namespace: str, tmp_path: Path) -> None:
    rng = random.Random(chaos_seed())
    models = [f"a{i}" for i in range(MODELS)]
    fleet = Fleet(operator, namespace, tmp_path, models, ROLLOUTS_PER_MODEL, rng, bad_every=10**6, deadline=150)
    restarter = Restarter(operator, namespace, rng)
    started = time.monotonic()
    watcher = run_under(restarter, fleet, progress_deadline="60s")
    down = ", ".join(f"{d:.1f}s" for d in restarter.downtime)
    during = "; ".join(restarter.during)
    elapsed = time.monotonic() - started
    FIGURES.append(
        f"kube-apiserver restarts: {restarter.restarts} (down {down}; during: {during}) in {elapsed:.0f}s; "
        f"{fleet.summary()}; {watcher.report()}"
    )
    print(FIGURES[-1])
    assert restarter.restarts == RESTARTS, "the API server was not restarted as often as planned"
    assert_held(fleet, watcher)
