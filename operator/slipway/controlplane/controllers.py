"""Builds the real third-party controllers from their pinned Go modules, for the conformance tests.

The KubeRay operator is built from the same module (and version) whose CRDs the tests install
(upstream.PINS), so the controller and its schema always agree. The module's own go.mod and
go.sum pin its dependencies; the build runs in a writable copy (the module cache is read-only)
and the binary is cached under ~/.cache/slipway/controllers/<module>@<version>/, like the
control-plane binaries.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .assets import CACHE, build_once, cached_bin_dir, go_build
from .upstream import PINS, Pin, download

KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"


def kube_controller_manager() -> Path:
    """kube-controller-manager of the apiserver's release: from KUBEBUILDER_ASSETS when it has one
    (envtest's folders usually do not), else built with the control plane."""
    explicit = os.environ.get("KUBEBUILDER_ASSETS")
    if explicit and (Path(explicit) / "kube-controller-manager").exists():
        return Path(explicit) / "kube-controller-manager"
    return cached_bin_dir() / "kube-controller-manager"


def kuberay_operator() -> Path:
    """The KubeRay operator binary at the pinned version, built once (about a minute on 2 cores)."""
    pin = next(p for p in PINS if p.module == KUBERAY_MODULE)
    target = CACHE / "controllers" / f"kuberay-{pin.version}"
    binary = target / "ray-operator"  # go build names it after the module
    build_once(target, binary.exists, lambda: _build_kuberay(pin, target))
    return binary


def _build_kuberay(pin: Pin, target: Path) -> None:
    source = download((pin,))[f"{pin.module}@{pin.version}"]
    with tempfile.TemporaryDirectory(prefix="slipway-kuberay-") as scratch:
        module = Path(scratch) / "ray-operator"
        shutil.copytree(source, module, ignore=shutil.ignore_patterns("test", "*_test.go"))
        for path in [module, *module.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        go_build(module, partial, ["."])
        partial.rename(target)  # atomic: a half-built binary is never found by a later call
