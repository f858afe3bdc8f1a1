"""Finds or builds helm, so the chart is linted and rendered even where helm is not installed.

`helm` on PATH wins. Otherwise the release pinned in tools/helm/go.mod is built from the Go module
proxy once and cached under ~/.cache/slipway/helm/<version>-<hash of tools/helm>/, so a changed
pin rebuilds by itself and every later call costs nothing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from .assets import CACHE, TOOLS, build_once, go_build

HELM_TOOLS = TOOLS.parent / "helm"
# Helm keeps its root command unexported in this main package, so we build the package itself.
HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"


def _pinned(module: str) -> str:
    """The version of `module` in tools/helm/go.mod (direct or indirect requirement)."""
    text = (HELM_TOOLS / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"tools/helm/go.mod does not pin {module}")
    return match.group(1)


def helm_version() -> str:
    """The pinned Helm release."""
    return _pinned("helm.sh/helm/v3")


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(HELM_TOOLS.iterdir()):
        if path.is_file() and path.suffix in {".go", ".mod", ".sum"}:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _ldflags() -> str:
    """What helm's own Makefile stamps in, so `helm version` and the default KubeVersion are right.

    Without them helm reports "v3.N" and renders and lints against Kubernetes 1.20; its Makefile
    derives the Kubernetes version from the client-go it is built with (v0.N -> 1.N).
    """
    kube_minor = _pinned("k8s.io/client-go").lstrip("v").split(".")[1]
    flags = [f"-X helm.sh/helm/v3/internal/version.version={helm_version()}"]
    flags += ["-X helm.sh/helm/v3/internal/version.metadata=", "-X helm.sh/helm/v3/internal/version.gitTreeState=clean"]
    for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={kube_minor}"]
    return " ".join(flags)


def _build(target: Path) -> None:
    if shutil.which("go") is None:
        raise RuntimeError("Go is needed to build helm (or put helm on PATH)")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    go_build(HELM_TOOLS, partial, [HELM_PACKAGE], _ldflags())
    partial.rename(target)  # atomic: a half-built binary is never found by a later call


def helm_binary() -> Path:
    """helm from PATH, else the pinned release, built once into the cache."""
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    target = CACHE / "helm" / f"{helm_version()}-{_sources_digest()}"
    binary = target / "helm"
    build_once(target, binary.exists, lambda: _build(target))
    return binary
