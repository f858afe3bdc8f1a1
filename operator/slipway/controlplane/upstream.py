"""The third-party CRDs Slipway writes objects of, exactly as their projects publish them.

Tests and the dev stack validate the RayJobs, InferenceServices and HTTPRoutes the operator builds
against the real schemas (a self-written stand-in would accept what the real one refuses), so the
CRDs come from the upstream modules at pinned versions. `go mod download` fetches each module from
the Go module proxy and checks it against the Go checksum database; the files named in PINS are
copied once into ~/.cache/slipway/crds/<hash of PINS>/ (never committed), so a changed pin fetches
by itself and every later call costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .assets import CACHE, build_once

NAMES_FILE = "names.txt"  # the CRD names, one a line; not .yaml/.json, so `kubectl apply -f DIR` skips it


@dataclass(frozen=True)
class Pin:
    """One Go module at one version, and the CRD files inside it that we use."""

    module: str
    version: str
    files: tuple[str, ...]


PINS: tuple[Pin, ...] = (
    # The issue asked for KubeRay v1.7.0, but proxy.golang.org answers 403 "not available" for
    # ray-operator v1.7.0; v1.6.1 is the newest version it serves. hack/kind-up.sh installs the same.
    Pin(
        "github.com/ray-project/kuberay/ray-operator",
        "v1.6.1",
        # RayServices too: the KubeRay operator (tests/conformance) will not start without them.
        tuple(f"config/crd/bases/ray.io_{plural}.yaml" for plural in ("rayjobs", "rayclusters", "rayservices")),
    ),
    # The proxy does not serve KServe v0.21.x either; v0.20.0 is the newest it has. TrainedModels
    # and InferenceGraphs too: the KServe controller manager (tests/conformance) watches them and
    # will not start without them; and ClusterStorageContainers, which it lists to resolve a
    # predictor's STORAGE_URI (it fails the InferenceService without the kind).
    Pin(
        "github.com/kserve/kserve",
        "v0.20.0",
        (
            *(
                f"config/crd/full/serving.kserve.io_{plural}.yaml"
                for plural in (
                    "inferenceservices",
                    "servingruntimes",
                    "clusterservingruntimes",
                    "trainedmodels",
                    "inferencegraphs",
                )
            ),
            "config/crd/full/clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml",
        ),
    ),
    # The standard channel: what the Gateway implementations of hack/kind-up.sh serve.
    Pin(
        "sigs.k8s.io/gateway-api",
        "v1.6.3",
        tuple(
            f"config/crd/standard/gateway.networking.k8s.io_{plural}.yaml"
            for plural in ("httproutes", "gateways", "gatewayclasses", "referencegrants")
        ),
    ),
    # The chart's optional ServiceMonitor.
    Pin(
        "github.com/prometheus-operator/prometheus-operator",
        "v0.88.0",
        ("example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",),
    ),
)


def pinned_version(module: str) -> str:
    """The version PINS fetches `module` at."""
    for pin in PINS:
        if pin.module == module:
            return pin.version
    raise KeyError(f"{module} is not pinned in slipway.controlplane.upstream.PINS")


def pins_digest() -> str:
    """A short hash of PINS: the cache folder's name, so any change to a pin fetches anew."""
    table = [[pin.module, pin.version, list(pin.files)] for pin in PINS]
    return hashlib.sha256(json.dumps(table).encode()).hexdigest()[:12]


def download(pins: tuple[Pin, ...]) -> dict[str, Path]:
    """`go mod download -json` of each pin; module@version -> the module's extracted folder."""
    if shutil.which("go") is None:
        raise RuntimeError(
            "Go is needed to fetch the upstream CRDs (KubeRay, KServe, Gateway API, Prometheus Operator) "
            "from the Go module proxy; install Go (https://go.dev/dl/) and put `go` on PATH"
        )
    # Outside any Go module (and workspace), `go mod download MODULE@VERSION` fetches just that
    # module; without a go.sum to check against, go verifies it with the checksum database.
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOWORK": "off", "GO111MODULE": "on"}
    wanted = [f"{pin.module}@{pin.version}" for pin in pins]
    with tempfile.TemporaryDirectory(prefix="slipway-crds-") as scratch:
        result = subprocess.run(
            ["go", "mod", "download", "-json", *wanted], cwd=scratch, env=env, capture_output=True, text=True
        )
    found: dict[str, Path] = {}
    errors: list[str] = []
    for info in _json_stream(result.stdout):
        key = f"{info.get('Path')}@{info.get('Version')}"
        if info.get("Error") or not info.get("Dir"):
            errors.append(f"{key}: {info.get('Error') or 'no Dir in the answer'}")
        else:
            found[key] = Path(info["Dir"])
    missing = [key for key in wanted if key not in found]
    if result.returncode != 0 or missing:
        detail = "; ".join(errors) or result.stderr.strip() or f"nothing for {', '.join(missing)}"
        raise RuntimeError(f"go mod download of the pinned CRD modules failed: {detail}")
    return found


def _json_stream(text: str) -> list[dict[str, Any]]:
    """`go mod download -json` prints one JSON object per module, one after another (no list)."""
    decoder, position = json.JSONDecoder(), 0
    objects: list[dict[str, Any]] = []
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return objects
        obj, position = decoder.raw_decode(text, position)
        objects.append(obj)


def crd_name(path: Path) -> str:
    """metadata.name of the CustomResourceDefinition in `path` (libyaml when there: KServe's is 2 MB)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(path.read_text(), Loader=loader)  # a safe loader either way
    if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
        raise RuntimeError(f"{path} is not a CustomResourceDefinition")
    name: str = doc["metadata"]["name"]
    return name


def _build(target: Path) -> None:
    """Fetches the pinned modules and copies their CRD files, flat, into target/ (atomically)."""
    folders = download(PINS)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)  # a folder without names.txt is not ours to trust
    partial.mkdir(parents=True)
    names: list[str] = []
    for pin in PINS:
        source = folders[f"{pin.module}@{pin.version}"]
        for file in pin.files:
            destination = partial / Path(file).name
            if destination.exists():
                raise RuntimeError(f"two pinned CRD files are both named {destination.name}")
            if not (source / file).is_file():
                raise RuntimeError(f"{pin.module}@{pin.version} has no {file}")
            shutil.copyfile(source / file, destination)  # not copy2: the module cache's files are read-only
            names.append(crd_name(destination))
    (partial / NAMES_FILE).write_text("".join(f"{name}\n" for name in names))
    partial.rename(target)  # atomic: a half-filled folder is never found by a later call


def upstream_crd_dir() -> Path:
    """The folder with the pinned upstream CRDs (only CRD YAML, plus names.txt), fetched once."""
    target = CACHE / "crds" / pins_digest()
    build_once(target, (target / NAMES_FILE).exists, lambda: _build(target))
    return target


def upstream_crd_names() -> list[str]:
    """metadata.name of each upstream CRD (e.g. rayjobs.ray.io), in PINS order."""
    return (upstream_crd_dir() / NAMES_FILE).read_text().split()
