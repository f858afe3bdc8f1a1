"""The CRDs come from one typed source: committed YAML must match it and be well-formed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from slipway.api.crds import KINDS, crd, rendered_files
from slipway.cli.main import DEFAULT_CRD_DIRS, write_crds

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("folder", DEFAULT_CRD_DIRS)
def test_committed_crds_match_the_typed_source(folder: str) -> None:
    for name, text in rendered_files().items():
        path = REPO / folder / name
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == text, f"{path} drifted from operator/slipway/api: run `make crds`"


def test_drift_check_fails_on_a_changed_file(tmp_path: Path) -> None:
    assert write_crds([tmp_path], check=False) == 0
    assert write_crds([tmp_path], check=True) == 0
    victim = next(tmp_path.glob("trainingruns*.yaml"))
    victim.write_text(victim.read_text().replace("minimum: 1", "minimum: 0", 1))
    assert write_crds([tmp_path], check=True) == 1


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, prop in schema.get("properties", {}).items():
        found += _walk(prop, f"{path}.{name}")
    if "items" in schema:
        found += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _walk(schema["additionalProperties"], f"{path}{{}}")
    return found


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_spec_and_status_field_is_described_and_typed(kind: Any) -> None:
    root = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for section in ("spec", "status"):
        for path, node in _walk(root["properties"][section], section):
            if path.endswith("{}") or path.endswith("[]"):
                continue  # map values and list items are described by their parent
            assert node.get("description"), f"{kind.kind} {path} has no description"
            assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{kind.kind} {path} has no type"
            assert "$ref" not in node and "anyOf" not in node, f"{kind.kind} {path} is not structural"


@pytest.mark.parametrize(
    ("kind", "short", "columns"),
    [
        ("TrainingRun", "tr", ["Model", "Phase", "Workers", "GPUs", "Metric", "Version", "Age"]),
        ("ModelVersion", "mv", ["Model", "Version", "Metric", "Gates", "Age"]),
        (
            "ModelDeployment",
            "md",
            ["Model", "Strategy", "Stable", "Candidate", "Weight", "Shadow", "Step", "Phase", "Reason", "Age"],
        ),
    ],
)
def test_names_category_and_printer_columns(kind: str, short: str, columns: list[str]) -> None:
    definition = crd(next(k for k in KINDS if k.kind == kind))
    names = definition["spec"]["names"]
    assert names["shortNames"] == [short]
    assert names["categories"] == ["slipway"]
    version = definition["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    shown = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert shown == columns


def test_specs_of_the_registry_and_of_runs_are_immutable() -> None:
    for kind in ("TrainingRun", "ModelVersion"):
        spec = crd(next(k for k in KINDS if k.kind == kind))["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        rules = spec["properties"]["spec"]["x-kubernetes-validations"]
        assert {"rule": "self == oldSelf"}.items() <= rules[0].items()
