"""Preparing a control plane for Slipway: our CRDs plus the upstream third-party CRDs, and the operator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ..api.crds import rendered_files
from ..controlplane.upstream import upstream_crd_dir, upstream_crd_names


def kubectl(kubectl_bin: Path, kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(kubectl_bin), f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def install_crds(kubectl_bin: Path, kubeconfig: Path, workdir: Path) -> None:
    """Applies Slipway's CRDs (rendered from the typed source) and the upstream CRDs of KubeRay,
    KServe, the Gateway API and the Prometheus Operator at their pinned versions (see
    controlplane.upstream), and waits until all are served.

    Server-side apply: KServe's InferenceService CRD is far larger than the 256 KiB a client-side
    apply's last-applied annotation may hold.
    """
    ours = workdir / "crds"
    ours.mkdir(parents=True, exist_ok=True)
    for name, text in rendered_files().items():
        (ours / name).write_text(text)
    upstream = upstream_crd_dir()
    for folder in (ours, upstream):
        kubectl(kubectl_bin, kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(folder))
    # `kubectl wait` gives up at once on a CRD whose status has no conditions yet (".status.conditions
    # accessor error"), as a large one (KServe's) may not for a moment after its apply: ask again.
    deadline = time.monotonic() + 60
    while True:
        waited = kubectl(
            kubectl_bin, kubeconfig, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=False
        )
        if waited.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"CRDs were not established within 60s: {waited.stderr.strip()}")
        time.sleep(0.2)
    # Established is not yet servable: the storage behind a new CRD initialises a moment later.
    names = [crd["metadata"]["name"] for crd in _crd_names(ours)] + upstream_crd_names()
    plurals = ",".join(names)
    deadline = time.monotonic() + 60
    while kubectl(kubectl_bin, kubeconfig, "get", plurals, "-A", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError("CRDs were established but not served within 60s")
        time.sleep(0.2)


def _crd_names(folder: Path) -> list[dict[str, Any]]:
    docs = [yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))]
    return [
        doc
        for doc in docs
        if doc and doc.get("kind") == "CustomResourceDefinition" and "kopf" not in doc["metadata"]["name"]
    ]


class OperatorProcess:
    """`slipway operator` as a child process, exactly as it runs in a pod."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        argv: list[str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.env = env or {}
        # `argv` runs another operator in its place (the benchmark's bare Kopf yardstick).
        self.argv = argv or [sys.executable, "-m", "slipway", "operator", *(args or [])]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(self.argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None
