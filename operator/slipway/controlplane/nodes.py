"""What runs pods in the conformance stack: the real kube-scheduler, and kwok's fake nodes.

kwok (sigs.k8s.io/kwok) plays the kubelets: it keeps its nodes Ready and moves the pods bound to
them through their life cycle (Running and Ready; a Job's pods to Succeeded) without running a
container. The scheduler binds pods to those nodes by the real rules (requests, taints,
tolerations), so a GPU worker lands only on the node that advertises `nvidia.com/gpu`.

Safety: kwok hands out pod IPs from a loopback range and advertises its nodes at 127.0.0.1, so
nothing that follows a pod's or node's address ever leaves this machine.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from .assets import CACHE, build_once, go_build
from .controllers import kube_component
from .upstream import Pin, download

KWOK_MODULE = "sigs.k8s.io/kwok"
KWOK_VERSION = "v0.8.0"  # the newest the Go module proxy serves; built from its own go.mod
POD_CIDR = "127.64.0.0/16"  # loopback: kwok's pod IPs are never routable off this machine
KWOK_NODE_LABEL = "type"  # kwok manages only nodes labelled type=kwok
GPU = "nvidia.com/gpu"


# kwok v0.8 has no built-in stages: these, from its own module, make a node Ready (and keep its
# lease) and take a pod to Running and Ready, a Job's pod on to Succeeded, a deleted pod away.
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def kwok() -> tuple[Path, Path]:
    """The kwok controller at KWOK_VERSION and its stages file, built once into ~/.cache/slipway."""
    target = CACHE / "controllers" / f"kwok-{KWOK_VERSION}"
    binary, stages = target / "kwok", target / "stages.yaml"
    build_once(target, lambda: binary.exists() and stages.exists(), lambda: _build_kwok(target))
    return binary, stages


def _build_kwok(target: Path) -> None:
    pin = Pin(KWOK_MODULE, KWOK_VERSION, KWOK_STAGES)
    source = download((pin,))[f"{KWOK_MODULE}@{KWOK_VERSION}"]
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "stages.yaml").write_text("\n---\n".join((source / file).read_text() for file in KWOK_STAGES))
    # No replace directives in kwok's go.mod: a throwaway main module requiring kwok builds it
    # with kwok's own dependency versions (minimal version selection over its go.mod).
    with tempfile.TemporaryDirectory(prefix="slipway-kwok-") as scratch:
        module = Path(scratch)
        (module / "go.mod").write_text(
            f"module slipway.dev/tools/kwok\n\ngo 1.26.0\n\nrequire {KWOK_MODULE} {KWOK_VERSION}\n"
        )
        go_build(module, partial, [f"{KWOK_MODULE}/cmd/kwok"])
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # atomic: a half-built folder is never found by a later call


def kwok_argv(kubeconfig: Path, server_address: str) -> list[str]:
    binary, stages = kwok()
    return [
        str(binary),
        f"--config={stages}",
        f"--kubeconfig={kubeconfig}",
        f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL}=kwok",
        f"--cidr={POD_CIDR}",
        "--node-ip=127.0.0.1",
        "--node-lease-duration-seconds=40",
        f"--server-address={server_address}",
    ]


def scheduler_argv(kubeconfig: Path) -> list[str]:
    return [
        str(kube_component("kube-scheduler")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
    ]


def fake_node(name: str, cpu: str = "16", memory: str = "64Gi", gpus: int = 0) -> dict[str, Any]:
    """A node for kwok; a GPU node advertises `nvidia.com/gpu` and is tainted for GPU pods only,
    as GPU node pools usually are."""
    capacity = {"cpu": cpu, "memory": memory, "pods": "110", **({GPU: str(gpus)} if gpus else {})}
    spec: dict[str, Any] = {}
    if gpus:
        spec["taints"] = [{"key": GPU, "value": "present", "effect": "NoSchedule"}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {KWOK_NODE_LABEL: "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": spec,
        "status": {"capacity": capacity, "allocatable": capacity},
    }
