"""The upstream CRD pins (controlplane/upstream.py) and what hack/kind-up.sh installs agree.

The integration tests validate every child object against the pinned CRDs; a kind cluster that
runs other versions of KubeRay, KServe or the Gateway API would be checked against schemas it
does not serve. Static: reads the files, starts nothing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from slipway.controlplane import upstream
from slipway.controlplane.upstream import PINS, Pin, pinned_version, pins_digest
from tests.support import REPO

KIND_UP = REPO / "hack" / "kind-up.sh"
README = REPO / "README.md"
KUBERAY = "github.com/ray-project/kuberay/ray-operator"
KSERVE = "github.com/kserve/kserve"
GATEWAY_API = "sigs.k8s.io/gateway-api"

# kind-up.sh variable -> the pinned module; KubeRay's Helm chart versions carry no leading "v".
KIND_UP_VARIABLES = {"KUBERAY_VERSION": KUBERAY, "KSERVE_VERSION": KSERVE, "GATEWAY_API_VERSION": GATEWAY_API}
README_ROWS = {"KubeRay operator": KUBERAY, "KServe": KSERVE, "Gateway API CRDs": GATEWAY_API}


def kind_up_default(variable: str) -> str:
    """The default of `VARIABLE="${VARIABLE:-default}"` in hack/kind-up.sh."""
    match = re.search(rf'^{variable}="\$\{{{variable}:-([^}}]+)\}}"$', KIND_UP.read_text(), re.MULTILINE)
    assert match, f"hack/kind-up.sh no longer sets {variable} with a default"
    return match.group(1)


def same_version(installed: str, pinned: str) -> bool:
    return installed.removeprefix("v") == pinned.removeprefix("v")


@pytest.mark.parametrize("variable", sorted(KIND_UP_VARIABLES))
def test_kind_up_installs_the_pinned_versions(variable: str) -> None:
    module = KIND_UP_VARIABLES[variable]
    installed, pinned = kind_up_default(variable), pinned_version(module)
    assert same_version(installed, pinned), (
        f"hack/kind-up.sh installs {variable}={installed} but the tests validate against {module} {pinned} "
        "(PINS in operator/slipway/controlplane/upstream.py): change both together"
    )


@pytest.mark.parametrize("component", sorted(README_ROWS))
def test_the_readme_component_table_names_the_pinned_versions(component: str) -> None:
    match = re.search(rf"^\| {re.escape(component)} \| (\S+) \|", README.read_text(), re.MULTILINE)
    assert match, f"README.md's kind component table has no row for {component}"
    assert same_version(match.group(1), pinned_version(README_ROWS[component]))


def test_pins_are_one_per_module_and_name_distinct_crd_files() -> None:
    modules = [pin.module for pin in PINS]
    assert len(set(modules)) == len(modules)
    names = [file.rsplit("/", 1)[-1] for pin in PINS for file in pin.files]
    assert len(set(names)) == len(names)  # copied flat into one folder
    assert all(name.endswith(".yaml") for name in names)
    assert all(re.fullmatch(r"v\d+\.\d+\.\d+", pin.version) for pin in PINS)


def test_the_cache_folder_follows_the_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    before = pins_digest()
    bumped = (Pin(PINS[0].module, "v0.0.1", PINS[0].files), *PINS[1:])
    monkeypatch.setattr(upstream, "PINS", bumped)
    assert pins_digest() != before


def test_without_go_the_error_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(upstream, "CACHE", tmp_path)
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(RuntimeError, match="Go is needed"):
        upstream.upstream_crd_dir()


@pytest.mark.skipif(shutil.which("go") is None, reason="needs go")
def test_a_module_the_proxy_cannot_give_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPROXY", "off")  # nothing leaves the machine: the lookup fails at once
    missing = Pin("example.com/slipway/none", "v0.0.1", ("crd.yaml",))
    with pytest.raises(RuntimeError, match=re.escape("example.com/slipway/none@v0.0.1")):
        upstream.download((missing,))
