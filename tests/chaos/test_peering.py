"""Two operator replicas with Kopf peering: the active one is SIGKILLed mid-rollout, the standby takes over.

Both replicas run as they do in the chart (peering on: no SLIPWAY_STANDALONE; the peering CRDs
installed with ours), each as a ServiceAccount of its own bound to the chart's ClusterRole, so the
API server's audit log tells their writes apart. Replica 1 starts alone and rolls versions out;
replica 2 starts (its later start time is the higher priority), replica 1 stands by, and replica 2
rolls the next versions out. Replica 2 is SIGKILLed in the middle of a rollout: no farewell, its
peering record stays until it expires. Measured: the takeover time (kill -> replica 1's first
write), and, from the audit log, which writes both replicas did: no child may be created twice,
and the old leader must stop acting within seconds of the new one's start (the handover, when
both act: Kopf's peering has no fencing, so those writes are counted and must be idempotent).
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import pytest
import yaml

from slipway.controlplane import ControlPlane
from slipway.controlplane.components import healthy
from slipway.controlplane.server import free_port
from slipway.devstack.cluster import OperatorProcess, install_crds
from slipway.handlers.settings import PEERING_LIFETIME_S
from tests.chaos import audit
from tests.chaos.fleet import FIGURES, STEPS, ChaosControllers, Fleet, chaos_seed
from tests.chaos.invariants import Invariants
from tests.support import OPERATOR_USER, RELEASE_NAMESPACE, Cluster, render_chart, wait_for

pytestmark = pytest.mark.integration

STANDBY_SA = "slipway-replica-2"
REPLICA_2 = f"system:serviceaccount:{RELEASE_NAMESPACE}:{STANDBY_SA}"
MODELS = ["m0", "m1"]
# A dead peer's record holds the standby back until it expires: the operator's peering lifetime
# (20 s; keep-alives every 10-15 s), plus a keep-alive of the standby's to notice it, plus slack.
TAKEOVER_BOUND = PEERING_LIFETIME_S + 20.0
# How long the old leader may go on acting once the new one acts: until it sees the new one's
# keep-alive in the peering (a watch event away).
HANDOVER_S = 5.0


def replica(plane: ControlPlane, workdir: Path, user: str, pod: str) -> tuple[OperatorProcess, str]:
    """`slipway operator` as the chart runs it (peering on), named `pod` in the peering."""
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    process = OperatorProcess(
        plane.kubeconfig_for(user), workdir / f"{pod}.log", env={"POD_ID": pod}, args=["--liveness", liveness]
    )
    process.start()
    return process, liveness


def grant_second_replica(cluster: Cluster) -> None:
    """The chart's ClusterRole for a second ServiceAccount: each replica is its own user in the audit."""
    (binding,) = [copy.deepcopy(d) for d in render_chart() if d["kind"] == "ClusterRoleBinding"]
    binding["metadata"] = {"name": STANDBY_SA}
    binding["subjects"] = [{"kind": "ServiceAccount", "name": STANDBY_SA, "namespace": RELEASE_NAMESPACE}]
    result = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(binding))
    assert result.returncode == 0, result.stderr


def test_standby_takes_over_from_a_killed_replica_without_double_actions(tmp_path: Path) -> None:
    rng = random.Random(chaos_seed())
    with ControlPlane(tmp_path / "plane", users=[OPERATOR_USER, REPLICA_2], audit=True) as plane:
        install_crds(plane.assets.kubectl, plane.kubeconfig, tmp_path)
        cluster = Cluster(plane, tmp_path)
        cluster.grant_operator_chart_rbac()
        grant_second_replica(cluster)
        namespace = "chaos-peering"
        cluster.core.create_namespace({"metadata": {"name": namespace}})
        controllers = ChaosControllers(cluster, namespace)
        controllers.thread.start()
        watcher = Invariants(cluster, namespace).start()
        artifacts = tmp_path / "artifacts"
        fleet = Fleet(cluster, namespace, artifacts, MODELS, rollouts=1, rng=rng, bad_every=1000, deadline=150)
        first, first_url = replica(plane, tmp_path, OPERATOR_USER, "replica-1")
        second = None
        try:
            wait_for(lambda: healthy(first_url), timeout=120, what="replica 1 up")
            fleet.start(f"http://127.0.0.1:{free_port()}", STEPS, progress_deadline="120s")
            fleet.run()  # version 2 of each, by replica 1
            second, second_url = replica(plane, tmp_path, REPLICA_2, "replica-2")
            wait_for(lambda: healthy(second_url), timeout=120, what="replica 2 up")
            second_up = time.time()
            fleet.run()  # version 3 of each, by replica 2
            # Version 4 of each, and replica 2 killed once both rollouts are under way.
            fleet.rollouts = 1
            rollouts = fleet.start_rollouts()

            def under_way() -> bool:
                statuses = [(fleet.get("modeldeployments", m).get("status") or {}) for m in MODELS]
                return all(s.get("candidateVersion") and s.get("phase") == "Progressing" for s in statuses)

            wait_for(under_way, timeout=120, what="both rollouts under way")
            time.sleep(rng.uniform(0, 1.5))  # the fault's own timing: a random moment inside the rollouts
            killed = time.time()
            second.kill()
            fleet.join(rollouts)
        finally:
            for process in (first, second):
                if process:
                    process.stop()
            watcher.stop()
            controllers.stop.set()
            controllers.thread.join(timeout=5)
        assert plane.audit_log is not None
        found = audit.writes(plane.audit_log, {OPERATOR_USER, REPLICA_2})

    by_second = [w for w in found if w.user == REPLICA_2]
    assert by_second, "replica 2 never acted"
    after_kill = [w for w in found if w.user == OPERATOR_USER and w.at > killed]
    assert after_kill, "replica 1 never took over"
    takeover = after_kill[0].at - killed
    # Replica 1 stands by once it sees replica 2's keep-alive: what it wrote after replica 2 was
    # up is the handover, when both act (Kopf's peering has no fencing). Deterministic child
    # names and server-side apply make those writes idempotent: nothing may be created twice.
    handover = [w for w in found if w.user == OPERATOR_USER and second_up < w.at < killed]
    twice = audit.twice_created(found)
    together = audit.concurrent(found, within=1.0)
    FIGURES.append(
        f"peering: takeover (kill -> standby's first write) {takeover:.1f}s (bound {TAKEOVER_BOUND:.0f}s); "
        f"{len(found)} writes audited: {len(twice)} objects created twice, "
        f"{len(handover)} writes by the old leader after the new one was up (the handover: "
        f"{sorted({w.target for w in handover})}), {len(together)} objects written by both within 1s; "
        f"{fleet.summary()}; {watcher.report()}"
    )
    print(FIGURES[-1])
    assert takeover <= TAKEOVER_BOUND, f"the standby took {takeover:.1f}s to take over"
    assert not twice, twice
    assert not [w for w in handover if w.at > by_second[0].at + HANDOVER_S], handover
    # A standby resumes with indexes as old as its pause (Kopf lists each kind again in its own
    # time): the live reads before writing (handlers/modeldeployment.py, training_finish.py) are
    # what keep it from rolling out an older version or registering a run again.
    assert not (fleet.errors or watcher.violations), "\n".join(fleet.errors + watcher.violations)
    assert all(o.result == "Promoted" for o in fleet.outcomes), fleet.outcomes
