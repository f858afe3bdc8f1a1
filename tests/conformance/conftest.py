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
proxy on loopback (slipway.controlplane.components), so a Ray dashboard call fails at once
without a name lookup; KubeRay uses no apiserver service proxy (`--use-kubernetes-proxy` is
off); no kube-proxy or CNI runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from slipway.controlplane import ControlPlane
from slipway.controlplane.components import (
    DEAD_END_PROXY,
    Component,
    healthy,
    kserve,
    kube_controller_manager,
    kube_scheduler,
    start_all,
    stop_all,
)
from slipway.controlplane.controllers import kserve_manager, kube_component, kuberay_operator
from slipway.controlplane.nodes import fake_node, kwok, kwok_argv
from slipway.controlplane.server import free_port
from slipway.devstack.cluster import install_crds
from tests.support import OPERATOR_USER, Cluster

NAMESPACE = "conformance"
# What a cluster runs for pods: Deployments and ReplicaSets (KServe's predictors), Jobs (KubeRay's
# submitter), node life cycle (lifts the not-ready taint off kwok's nodes) and the garbage collector.
CONTROLLERS = ("garbagecollector", "deployment", "replicaset", "job", "nodelifecycle")
NODES = (fake_node("cpu-0"), fake_node("gpu-0", gpus=4))


@pytest.fixture(scope="package")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane with the Slipway operator, KubeRay, KServe, kube-controller-manager,
    kube-scheduler and kwok's nodes (one with GPUs)."""
    # Built (once, into ~/.cache/slipway) before anything starts, so no server idles meanwhile.
    kuberay_operator(), kserve_manager(), kube_component("kube-controller-manager"), kwok()
    workdir = tmp_path_factory.mktemp("conformance")
    with ControlPlane(workdir / "plane", users=[OPERATOR_USER]) as plane:
        install_crds(plane.assets.kubectl, plane.kubeconfig, workdir)
        cluster = Cluster(plane, workdir)
        cluster.grant_operator_chart_rbac()
        cluster.core.create_namespace({"metadata": {"name": NAMESPACE}})
        manager, kserve_objects = kserve(workdir)
        applied = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([*kserve_objects, *NODES]))
        assert applied.returncode == 0, applied.stderr
        probe, kwok_probe = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        kuberay_argv = [
            str(kuberay_operator()),
            f"--watch-namespace={NAMESPACE}",
            "--enable-leader-election=false",
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address={probe}",
            "--log-stdout-encoder=console",
        ]
        components = [
            kube_controller_manager(cluster.kubeconfig, CONTROLLERS),
            kube_scheduler(cluster.kubeconfig),
            Component("kwok", kwok_argv(cluster.kubeconfig, kwok_probe), lambda: _nodes_ready(cluster)),
            Component("kuberay", kuberay_argv, lambda: healthy(f"http://{probe}/readyz"), DEAD_END_PROXY),
            manager,
        ]
        operator = cluster.start_operator()
        try:
            start_all(components, cluster.kubeconfig, workdir)
            yield cluster
        finally:
            stop_all(components)
            operator.stop()


def _nodes_ready(cluster: Cluster) -> bool:
    """kwok has made every node Ready and the node controller has lifted the not-ready taint."""
    nodes = cluster.core.list_node().items
    return len(nodes) == len(NODES) and all(
        any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        and not any(t.key == "node.kubernetes.io/not-ready" for t in node.spec.taints or [])
        for node in nodes
    )
