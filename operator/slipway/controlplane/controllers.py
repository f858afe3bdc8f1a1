"""Builds the real third-party controllers from their pinned Go modules, for the conformance tests.

The KubeRay operator and the KServe controller manager are built from the same modules (and
versions) whose CRDs the tests install (upstream.PINS), so each controller and its schema always
agree. A module's own go.mod and go.sum pin its dependencies (and its replace directives, which is
why it is built as the main module, not with `go install module@version`); the build runs in a
writable copy (the module cache is read-only) and the binary is cached under
~/.cache/slipway/controllers/<name>-<version>/, like the control-plane binaries.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .assets import CACHE, build_once, cached_bin_dir, go_build
from .upstream import PINS, Pin, download

KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
KSERVE_MODULE = "github.com/kserve/kserve"


def kube_component(name: str) -> Path:
    """A binary of the apiserver's release (kube-controller-manager, kube-scheduler): from
    KUBEBUILDER_ASSETS when it has one (envtest's folders usually do not), else built with the
    control plane."""
    explicit = os.environ.get("KUBEBUILDER_ASSETS")
    if explicit and (Path(explicit) / name).exists():
        return Path(explicit) / name
    return cached_bin_dir() / name


def kuberay_operator() -> Path:
    """The KubeRay operator binary at the pinned version, built once (about a minute on 2 cores)."""
    # go build names the binary of package "." after the folder: the copy is named ray-operator.
    return _pinned_binary(KUBERAY_MODULE, "kuberay", ".", "ray-operator")


def kserve_manager() -> Path:
    """KServe's controller manager (cmd/manager) at the pinned version, built once."""
    return _pinned_binary(KSERVE_MODULE, "kserve", "./cmd/manager", "manager")


def _pinned_binary(module: str, name: str, package: str, binary: str) -> Path:
    """`go build` of one package of a pinned module, cached in controllers/<name>-<version>/."""
    pin = next(p for p in PINS if p.module == module)
    target = CACHE / "controllers" / f"{name}-{pin.version}"
    build_once(target, (target / binary).exists, lambda: _build_pinned(pin, target, package))
    return target / binary


# Top-level folders of no Go package we build (KServe's install/ alone is 316 MB of manifests), and
# tests anywhere: skipped when copying a module for its build.
_NOT_BUILT = frozenset({"docs", "install", "python", "charts", "hack"})


def _skip(source: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == source
        return {n for n in names if n == "test" or n.endswith("_test.go") or (top and n in _NOT_BUILT)}

    return ignore


def _build_pinned(pin: Pin, target: Path, package: str) -> None:
    source = download((pin,))[f"{pin.module}@{pin.version}"]
    with tempfile.TemporaryDirectory(prefix=f"slipway-{target.name}-") as scratch:
        module = Path(scratch) / pin.module.rsplit("/", 1)[-1]
        shutil.copytree(source, module, ignore=_skip(source))
        for path in [module, *module.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        go_build(module, partial, [package])
        partial.rename(target)  # atomic: a half-built binary is never found by a later call
