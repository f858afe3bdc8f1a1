"""The real cluster components beside a control plane, each a child process on loopback.

Both the conformance tests and the dev stack run them: kube-controller-manager and kube-scheduler
(the apiserver's own release) and KServe's controller manager (Standard mode, Gateway API routes,
its own webhooks; see `kserve`). `serving_components` is the set the dev stack runs so that KServe,
not a stand-in, makes every predictor's Deployment, Service, HTTPRoutes and status.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .controllers import kserve_manager, kube_component
from .kserve import INGRESS_GATEWAY, manager_setup
from .nodes import scheduler_argv

# Every HTTP request KubeRay or KServe would send to a Ray dashboard or a model server goes to this
# proxy, which is a closed loopback port: it fails at once, on this machine, and no pod's or
# service's name is ever looked up. Go never proxies loopback, so the apiserver is reached directly.
DEAD_END_PROXY = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
# What KServe's predictors need of kube-controller-manager: Deployments, ReplicaSets and the garbage
# collector (which removes them with their InferenceService).
SERVING_CONTROLLERS = ("garbagecollector", "deployment", "replicaset")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Component:
    """One component as a child process, logged to `<folder>/<name>.log`: with the admin kubeconfig
    when given one, and nothing else of this process's environment but PATH and `env`."""

    name: str
    argv: list[str]
    ready: Callable[[], bool] = lambda: True
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self, kubeconfig: Path | None, folder: Path) -> None:
        self._log = open(folder / f"{self.name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        env = {"PATH": "/usr/bin:/bin", **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {}), **self.env}
        self.proc = subprocess.Popen(self.argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"{self.name} exited with {code}: see its log ({self._log_name()})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} was not ready within {timeout}s: see {self._log_name()}")
            time.sleep(0.2)

    def dead(self) -> int | None:
        """Its exit status once it has exited, else None."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 20) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()

    def _log_name(self) -> str:
        return self._log.name if self._log is not None else self.name


def start_all(components: Sequence[Component], kubeconfig: Path | None, folder: Path, timeout: float = 60) -> None:
    """Starts every component, then waits for each to be ready; stops them all if one is not."""
    try:
        for component in components:
            component.start(kubeconfig, folder)
        for component in components:
            component.wait_ready(timeout)
    except BaseException:
        stop_all(components)
        raise


def stop_all(components: Sequence[Component]) -> None:
    for component in reversed(components):
        component.stop()


def kube_controller_manager(kubeconfig: Path, controllers: Sequence[str]) -> Component:
    argv = [
        str(kube_component("kube-controller-manager")),
        f"--kubeconfig={kubeconfig}",
        f"--controllers={','.join(controllers)}",
        "--leader-elect=false",
        "--secure-port=0",
    ]
    return Component("kube-controller-manager", argv)


def kube_scheduler(kubeconfig: Path) -> Component:
    return Component("kube-scheduler", scheduler_argv(kubeconfig))


def kserve(workdir: Path, gateway: str = INGRESS_GATEWAY) -> tuple[Component, list[dict[str, Any]]]:
    """KServe's controller manager, and the objects to create before it starts (its namespace,
    config map and webhook configurations)."""
    setup = manager_setup(kserve_manager(), workdir, gateway)
    component = Component("kserve", setup.argv, lambda: healthy(setup.ready_url), {**setup.env, **DEAD_END_PROXY})
    return component, setup.objects


def serving_components(kubeconfig: Path, workdir: Path, gateway: str) -> tuple[list[Component], list[dict[str, Any]]]:
    """What makes InferenceServices into pods: KServe, the Deployment and ReplicaSet controllers,
    the garbage collector and the scheduler; and the objects KServe needs first."""
    manager, objects = kserve(workdir, gateway)
    return [kube_controller_manager(kubeconfig, SERVING_CONTROLLERS), kube_scheduler(kubeconfig), manager], objects
