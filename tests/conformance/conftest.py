"""The real KubeRay operator and garbage collector beside the real Slipway operator.

KubeRay is built from the module whose CRDs the control plane has (slipway.controlplane), and
watches only NAMESPACE, so it never meets the RayJobs other test folders hand to the dev stack's
stand-in. kube-controller-manager (the apiserver's own release) runs only its garbage collector.
Nothing runs pods here (no scheduler, no kubelet): KubeRay makes its RayClusters, Pods and
Services, and they stay Pending. So KubeRay never dials a Ray dashboard (it does only once the
head pod runs), and it uses no apiserver service proxy (`--use-kubernetes-proxy` is off).
"""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from slipway.controlplane.controllers import kube_controller_manager, kuberay_operator
from slipway.controlplane.server import free_port
from tests.support import Cluster, wait_for

NAMESPACE = "conformance"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def running(cluster: Cluster, name: str, argv: list[str], ready: Callable[[], bool]) -> Iterator[None]:
    """A component as a child process with the admin kubeconfig, logged to the cluster's workdir."""
    log = open(cluster.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        argv, env={"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin"}, stdout=log, stderr=subprocess.STDOUT
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


@pytest.fixture(scope="package")
def kuberay(operator: Cluster) -> Iterator[Cluster]:
    """The cluster with the Slipway operator, the KubeRay operator and the garbage collector."""
    operator.core.create_namespace({"metadata": {"name": NAMESPACE}})
    probe = f"127.0.0.1:{free_port()}"
    kuberay_argv = [
        str(kuberay_operator()),
        f"--watch-namespace={NAMESPACE}",
        "--enable-leader-election=false",
        f"--metrics-addr=127.0.0.1:{free_port()}",
        f"--health-probe-bind-address={probe}",
        "--log-stdout-encoder=console",
    ]
    # Only the garbage collector: owner references are honoured as in a real cluster, and nothing
    # else (no ServiceAccount tokens, no node lifecycle) acts on the tests' objects.
    collector_argv = [
        str(kube_controller_manager()),
        f"--kubeconfig={operator.kubeconfig}",
        "--controllers=garbagecollector",
        "--leader-elect=false",
        "--secure-port=0",
    ]
    with (
        running(operator, "kuberay", kuberay_argv, lambda: _healthy(f"http://{probe}/readyz")),
        running(operator, "kube-controller-manager", collector_argv, lambda: True),
    ):
        yield operator
