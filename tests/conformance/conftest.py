"""The real KubeRay operator, KServe controller manager and garbage collector beside the real
Slipway operator, in a control plane of this package's own.

KServe watches every namespace, and other test folders hand their InferenceServices to stand-ins
that write KServe's status; so this package starts its own etcd + kube-apiserver (as tests/conftest
does for the session) and runs the components in it.

KubeRay and KServe are built from the modules whose CRDs the control plane has
(slipway.controlplane); KubeRay watches only NAMESPACE. KServe runs in Standard mode with Gateway
API routing and its InferenceService webhooks registered (slipway.controlplane.kserve).
kube-controller-manager and kube-scheduler (the apiserver's own release) and kwok's fake nodes
(slipway.controlplane.nodes) run the pods: scheduled by the real rules, Running and Ready under
kwok, with IPs from a loopback range.

Safety: nothing here dials a pod or a service. KubeRay and KServe send HTTP through a dead-end
proxy on loopback (below), so a Ray dashboard call fails at once without a name lookup; KubeRay
uses no apiserver service proxy (`--use-kubernetes-proxy` is off); no kube-proxy or CNI runs.
"""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import yaml

from slipway.controlplane import ControlPlane
from slipway.controlplane.controllers import kserve_manager, kube_component, kuberay_operator
from slipway.controlplane.kserve import manager_setup
from slipway.controlplane.nodes import fake_node, kwok, kwok_argv, scheduler_argv
from slipway.controlplane.server import free_port
from slipway.devstack.cluster import install_crds
from tests.support import OPERATOR_USER, Cluster, wait_for

NAMESPACE = "conformance"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def running(
    cluster: Cluster, name: str, argv: list[str], ready: Callable[[], bool], env: dict[str, str] | None = None
) -> Iterator[None]:
    """A component as a child process with the admin kubeconfig, logged to the cluster's workdir."""
    log = open(cluster.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        argv,
        env={"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin", **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: see {cluster.workdir / name}.log")
        return ready()

    try:
        wait_for(up, timeout=60, what=f"{name} ready")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# Every HTTP request KubeRay or KServe would send to a Ray dashboard or a model server goes to this
# proxy, which is a closed loopback port: it fails at once, on this machine, and no pod's or
# service's name is ever looked up. Go never proxies loopback, so the apiserver is reached directly.
DEAD_END_PROXY = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
# What a cluster runs for pods: Deployments and ReplicaSets (KServe's predictors), Jobs (KubeRay's
# submitter), node life cycle (lifts the not-ready taint off kwok's nodes) and the garbage collector.
CONTROLLERS = "garbagecollector,deployment,replicaset,job,nodelifecycle"
NODES = (fake_node("cpu-0"), fake_node("gpu-0", gpus=4))


@pytest.fixture(scope="package")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane with the Slipway operator, KubeRay, KServe, kube-controller-manager,
    kube-scheduler and kwok's nodes (one with GPUs)."""
    # Built (once, into ~/.cache/slipway) before anything starts, so no server idles meanwhile.
    kuberay, kserve, collector = kuberay_operator(), kserve_manager(), kube_component("kube-controller-manager")
    kwok()
    workdir = tmp_path_factory.mktemp("conformance")
    with ControlPlane(workdir / "plane", users=[OPERATOR_USER]) as plane:
        install_crds(plane.assets.kubectl, plane.kubeconfig, workdir)
        cluster = Cluster(plane, workdir)
        cluster.grant_operator_chart_rbac()
        cluster.core.create_namespace({"metadata": {"name": NAMESPACE}})
        kserve_setup = manager_setup(kserve, workdir)
        applied = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([*kserve_setup.objects, *NODES]))
        assert applied.returncode == 0, applied.stderr
        probe = f"127.0.0.1:{free_port()}"
        kuberay_argv = [
            str(kuberay),
            f"--watch-namespace={NAMESPACE}",
            "--enable-leader-election=false",
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address={probe}",
            "--log-stdout-encoder=console",
        ]
        controllers_argv = [
            str(collector),
            f"--kubeconfig={cluster.kubeconfig}",
            f"--controllers={CONTROLLERS}",
            "--leader-elect=false",
            "--secure-port=0",
        ]
        kwok_probe = f"127.0.0.1:{free_port()}"
        operator = cluster.start_operator()
        try:
            with (
                running(cluster, "kube-controller-manager", controllers_argv, lambda: True),
                running(cluster, "kube-scheduler", scheduler_argv(cluster.kubeconfig), lambda: True),
                running(cluster, "kwok", kwok_argv(cluster.kubeconfig, kwok_probe), lambda: _nodes_ready(cluster)),
                running(cluster, "kuberay", kuberay_argv, lambda: _healthy(f"http://{probe}/readyz"), DEAD_END_PROXY),
                running(
                    cluster,
                    "kserve",
                    kserve_setup.argv,
                    lambda: _healthy(kserve_setup.ready_url),
                    {**kserve_setup.env, **DEAD_END_PROXY},
                ),
            ):
                yield cluster
        finally:
            operator.stop()


def _nodes_ready(cluster: Cluster) -> bool:
    """kwok has made every node Ready and the node controller has lifted the not-ready taint."""
    nodes = cluster.core.list_node().items
    return len(nodes) == len(NODES) and all(
        any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        and not any(t.key == "node.kubernetes.io/not-ready" for t in node.spec.taints or [])
        for node in nodes
    )
