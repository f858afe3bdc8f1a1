"""The operator's start-up against a real API server: it waits out calls refused while its RBAC
settles, and exits, naming the cause, when no wait helps; it never runs on doing nothing.

A control plane of its own, whose operator identity has no RBAC until a test grants the chart's.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.controlplane import ControlPlane
from slipway.devstack.cluster import OperatorProcess, install_crds
from slipway.handlers.settings import STARTUP_BACKOFF_S, STARTUP_RETRIES
from tests.support import OPERATOR_USER, Cluster, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION = "slipway.dev", "v1alpha1"
NEVER_BOUND = "system:serviceaccount:slipway-system:never-bound"  # no role binds it
GIVE_UP_S = STARTUP_RETRIES * STARTUP_BACKOFF_S


@pytest.fixture(scope="module")
def ungranted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("startup")
    with ControlPlane(workdir / "plane", users=[OPERATOR_USER, NEVER_BOUND]) as plane:
        install_crds(plane.assets.kubectl, plane.kubeconfig, workdir)
        cluster = Cluster(plane, workdir)
        yield cluster
        if cluster.operator:
            cluster.operator.stop()


def exited(operator: OperatorProcess, timeout: float) -> int:
    """The operator's exit code, once it has exited."""
    proc = operator.proc
    assert proc is not None
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        operator.kill()
        raise AssertionError(f"the operator still ran after {timeout:.0f}s") from None


def test_a_bad_chart_value_stops_the_operator_naming_it(ungranted: Cluster) -> None:
    operator = ungranted.start_operator(env={"SLIPWAY_PROMETHEUS_URL": "prometheus:9090"})
    assert exited(operator, timeout=60) != 0
    log = operator.log_path.read_text()
    assert "SLIPWAY_PROMETHEUS_URL" in log and "'prometheus:9090'" in log, log[-3000:]
    assert "failed permanently" in log and "will try again" not in log, log[-3000:]  # at once


def test_a_metrics_port_in_use_stops_the_operator_naming_it(ungranted: Cluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        operator = ungranted.start_operator(env={"SLIPWAY_METRICS_PORT": str(port)})
        assert exited(operator, timeout=60) != 0
    log = operator.log_path.read_text()
    assert f"SLIPWAY_METRICS_PORT: cannot serve metrics on '{port}'" in log, log[-3000:]


def test_an_identity_never_allowed_stops_the_operator_after_its_retries(ungranted: Cluster, tmp_path: Path) -> None:
    operator = OperatorProcess(ungranted.plane.kubeconfig_for(NEVER_BOUND), tmp_path / "operator.log")
    operator.start()
    assert exited(operator, timeout=GIVE_UP_S + 60) != 0
    log = operator.log_path.read_text()
    assert log.count("Activity 'configure' failed with an exception and will try again") >= 2, log[-3000:]
    assert "forbidden" in log and NEVER_BOUND in log and "will stop now" in log, log[-3000:]


def test_calls_refused_until_rbac_is_granted_are_retried_and_the_operator_then_works(ungranted: Cluster) -> None:
    """The race a fresh install can hit: the operator starts before its ClusterRoleBinding is in
    effect. Its start-up is retried, and once allowed it reconciles as usual (before, a retry
    failed on the metrics port its first try still held, and the operator idled forever)."""
    operator = ungranted.start_operator()
    wait_for(lambda: "forbidden" in operator.log_path.read_text(), timeout=60, what="a start-up call refused")
    ungranted.grant_operator_chart_rbac()
    ungranted.core.create_namespace({"metadata": {"name": "late-rbac"}})
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelVersion",
        "metadata": {"name": "churn-1"},
        "spec": {"model": "churn", "version": 1, "uri": "file:///models/churn/1"},
    }
    ungranted.custom.create_namespaced_custom_object(GROUP, VERSION, "late-rbac", "modelversions", body)

    def registered() -> dict[str, str] | None:
        assert operator.proc is not None and operator.proc.poll() is None, operator.log_path.read_text()[-3000:]
        mv = ungranted.custom.get_namespaced_custom_object(GROUP, VERSION, "late-rbac", "modelversions", "churn-1")
        return next((c for c in (mv.get("status") or {}).get("conditions", []) if c["type"] == "Registered"), None)

    condition = wait_for(registered, timeout=GIVE_UP_S + 60, interval=0.5, what="the ModelVersion registered")
    assert condition["status"] == "True", condition
