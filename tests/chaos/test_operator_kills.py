"""The operator SIGKILLed at random moments while models are trained and rolled out.

The kills are seeded (the seed is printed; SLIPWAY_CHAOS_SEED chooses it) and land anywhere:
mid-handler, between a child's apply and the status that records it, during start-up. The
operator is restarted after each kill, as a Deployment's pod would be. The invariants
(tests/chaos/invariants.py) are checked every 0.2 s throughout, not only at the end.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from slipway.controlplane.components import healthy
from tests.chaos.fleet import FIGURES, Fault, Fleet, assert_held, chaos_seed, run_under
from tests.support import Cluster

pytestmark = pytest.mark.integration

MODELS = 4
ROLLOUTS_PER_MODEL = 5  # 20 rollouts in all, as the issue asks
# When a kill lands: mostly at a random moment of an operator that is up (its liveness probe
# answers), sometimes during its start-up; so a loaded machine slows the test, never starves it.
KILL_AFTER_UP = (0.3, 3.0)
KILL_IN_STARTUP = (0.2, (0.0, 1.5))  # (how often, when: seconds after the start)


class Killer(Fault):
    """SIGKILLs the operator at random moments and starts it again at once."""

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        super().__init__(rng)
        self.cluster = cluster
        self.kills = 0
        self.in_startup = 0

    def strike(self) -> None:
        while not self.stop.is_set():
            often, (low, high) = KILL_IN_STARTUP
            early = self.rng.random() < often
            if not early:
                deadline = time.monotonic() + 60
                while not healthy(self.cluster.liveness_url) and time.monotonic() < deadline:
                    if self.stop.wait(0.1):
                        return
            if self.stop.wait(self.rng.uniform(low, high) if early else self.rng.uniform(*KILL_AFTER_UP)):
                return
            assert self.cluster.operator is not None
            self.cluster.operator.kill()
            self.kills += 1
            self.in_startup += early
            self.cluster.start_operator()


def test_operator_killed_at_random_across_rollouts(operator: Cluster, namespace: str, tmp_path: Path) -> None:
    rng = random.Random(chaos_seed())
    fleet = Fleet(
        operator, namespace, tmp_path, [f"m{i}" for i in range(MODELS)], ROLLOUTS_PER_MODEL, rng, deadline=120
    )
    killer = Killer(operator, rng)
    started = time.monotonic()
    watcher = run_under(killer, fleet, progress_deadline="15s")
    elapsed = time.monotonic() - started
    kills = f"{killer.kills} kills ({killer.in_startup} during start-up)"
    FIGURES.append(f"operator SIGKILL: {kills} in {elapsed:.0f}s; {fleet.summary()}; {watcher.report()}")
    print(FIGURES[-1])
    assert killer.kills >= 5, f"only {killer.kills} kills: the faults did not happen"
    assert_held(fleet, watcher)
