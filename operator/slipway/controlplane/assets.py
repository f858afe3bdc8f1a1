"""Finds or builds the control-plane binaries.

`KUBEBUILDER_ASSETS` (the envtest convention) wins when set. Otherwise the pinned versions in
tools/controlplane are built from the Go module proxy once and cached under
~/.cache/slipway/controlplane/<hash of the Go sources>/, so a changed pin rebuilds by itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOLS = REPO_ROOT / "tools" / "controlplane"
CACHE = Path(os.environ.get("SLIPWAY_CACHE", Path.home() / ".cache" / "slipway"))


# What `build` makes; kube-controller-manager and kube-scheduler run in the conformance stack.
BINARIES = ("etcd", "kube-apiserver", "kubectl", "kube-controller-manager", "kube-scheduler")


@dataclass(frozen=True)
class Assets:
    etcd: Path
    kube_apiserver: Path
    kubectl: Path


def kube_version() -> str:
    """The pinned Kubernetes release, read from the Go module that builds it."""
    match = re.search(r"k8s\.io/kubernetes (v[0-9.]+)", (TOOLS / "kube" / "go.mod").read_text())
    if not match:
        raise RuntimeError("tools/controlplane/kube/go.mod does not pin k8s.io/kubernetes")
    return match.group(1)


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(TOOLS.rglob("*")):
        if path.is_file() and path.suffix in {".go", ".mod", ".sum"}:
            digest.update(str(path.relative_to(TOOLS)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def go_build(module: Path, out: Path, packages: list[str], ldflags: str = "") -> None:
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    cmd = ["go", "build", "-trimpath", "-o", str(out) + os.sep]
    if ldflags:
        cmd += ["-ldflags", ldflags]
    log.info("building %s in %s (first run only; a few minutes)", " ".join(packages), module)
    subprocess.run([*cmd, *packages], cwd=module, env=env, check=True)


def build(target: Path) -> None:
    """Builds etcd, kube-apiserver, kubectl, kube-controller-manager and kube-scheduler (the
    conformance stack's) into target/."""
    if shutil.which("go") is None:
        raise RuntimeError("Go is needed to build the control plane (or set KUBEBUILDER_ASSETS)")
    version = kube_version()
    major, minor = version.lstrip("v").split(".")[:2]
    stamp = (
        f"-X k8s.io/component-base/version.gitVersion={version} "
        f"-X k8s.io/component-base/version.gitMajor={major} "
        f"-X k8s.io/component-base/version.gitMinor={minor} "
        f"-X k8s.io/client-go/pkg/version.gitVersion={version}"
    )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    go_build(TOOLS / "etcd", partial, ["."])
    go_build(TOOLS / "kube", partial, [f"./cmd/{name}" for name in BINARIES if name != "etcd"], stamp)
    partial.rename(target)


def _kubectl_fits(kubectl: str, server_minor: int) -> bool:
    """kubectl is supported within one minor version of the apiserver."""
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        minor = int(re.sub(r"\D", "", json.loads(out)["clientVersion"]["minor"]))
    except (subprocess.SubprocessError, OSError, ValueError, KeyError):
        return False
    return abs(minor - server_minor) <= 1


def build_once(target: Path, done: Callable[[], bool], make: Callable[[], None]) -> None:
    """Runs `make` unless `done()`, under a lock beside `target`: parallel test processes build a
    cached tool once, and the ones that waited find it done."""
    if done():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done():
            make()


def cached_bin_dir() -> Path:
    target = CACHE / "controlplane" / f"{kube_version()}-{_sources_digest()}" / "bin"

    def rebuild() -> None:
        shutil.rmtree(target, ignore_errors=True)  # an older build of fewer binaries
        build(target)

    build_once(target, lambda: _complete(target), rebuild)
    return target


def _complete(target: Path) -> bool:
    return all((target / name).exists() for name in BINARIES)


def find_assets() -> Assets:
    explicit = os.environ.get("KUBEBUILDER_ASSETS")
    if explicit:
        base = Path(explicit)
        for name in ("etcd", "kube-apiserver"):
            if not (base / name).exists():
                raise RuntimeError(f"KUBEBUILDER_ASSETS={base} has no {name}")
        kubectl = base / "kubectl"
        if not kubectl.exists():
            on_path = shutil.which("kubectl")
            kubectl = Path(on_path) if on_path else cached_bin_dir() / "kubectl"
        return Assets(base / "etcd", base / "kube-apiserver", kubectl)
    bins = cached_bin_dir()
    on_path = shutil.which("kubectl")
    server_minor = int(kube_version().split(".")[1])
    kubectl = Path(on_path) if on_path and _kubectl_fits(on_path, server_minor) else bins / "kubectl"
    return Assets(bins / "etcd", bins / "kube-apiserver", kubectl)
