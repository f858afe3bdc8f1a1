"""`slipway dev up` / `slipway dev down`."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from ..controlplane import ControlPlane
from .cluster import OperatorProcess, install_crds, kubectl

PID_FILE = "dev.pid"


def up(workdir: Path) -> int:
    """Runs the dev stack in the foreground until Ctrl-C (or `slipway dev down`)."""
    workdir = workdir.resolve()
    if (workdir / PID_FILE).exists():
        pid = int((workdir / PID_FILE).read_text())
        if _alive(pid):
            print(f"a dev stack is already running (pid {pid}); stop it with `slipway dev down`")
            return 1
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("starting etcd and kube-apiserver (the first run builds them: a few minutes) ...", flush=True)
    with ControlPlane(workdir / "controlplane") as plane:
        install_crds(plane.assets.kubectl, plane.kubeconfig, workdir)
        kubectl(plane.assets.kubectl, plane.kubeconfig, "create", "namespace", "ml", check=False)
        operator = OperatorProcess(plane.kubeconfig, workdir / "operator.log")
        operator.start()
        (workdir / PID_FILE).write_text(str(os.getpid()))
        try:
            print(
                "\nSlipway dev stack is up.\n"
                f"  export KUBECONFIG={plane.kubeconfig}\n"
                f"  export PATH={plane.assets.kubectl.parent}:$PATH   # a kubectl of the API server's version\n"
                "  kubectl apply -f tests/manifests/contract.yaml\n"
                "  kubectl get slipway -n ml\n"
                f"Operator log: {workdir / 'operator.log'}. Ctrl-C (or `slipway dev down`) stops it all.",
                flush=True,
            )
            while not stop.wait(1):
                if operator.proc and operator.proc.poll() is not None:
                    print(f"the operator exited ({operator.proc.returncode}); see {workdir / 'operator.log'}")
                    return 1
        finally:
            operator.stop()
            (workdir / PID_FILE).unlink(missing_ok=True)
    print("dev stack stopped")
    return 0


def down(workdir: Path, timeout: float = 60) -> int:
    path = workdir / PID_FILE
    if not path.exists():
        print("no dev stack is running")
        return 0
    pid = int(path.read_text())
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        print(f"dev stack (pid {pid}) did not stop within {timeout}s")
        return 1
    path.unlink(missing_ok=True)
    print("dev stack stopped")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
