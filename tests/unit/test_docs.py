"""The docs stay true: docs/api.md is generated from the typed source, and the hand-written pages
name only commands, reasons and metrics that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from slipway.api.crds import KINDS, Kind, crd
from slipway.api.docs import DEFAULT_API_MD, fields, render_api_md, write_api_md
from slipway.cli.main import main
from slipway.cli.plugin import ACTIONS, SCHEDULE_ACTIONS
from slipway.reconcile import reasons

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
API_MD = REPO / DEFAULT_API_MD


def test_committed_api_reference_matches_the_typed_source() -> None:
    assert API_MD.exists(), "docs/api.md missing: run `make crds` (or `slipway docs`)"
    assert API_MD.read_text() == render_api_md(), "docs/api.md drifted from operator/slipway/api: run `make crds`"


def test_drift_check_fails_on_a_missing_or_changed_page(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "api.md"
    assert write_api_md(page, check=True) == 1
    assert main(["docs", str(page)]) == 0
    assert main(["docs", "--check", str(page)]) == 0
    page.write_text(page.read_text().replace("`>= 1`", "`>= 0`", 1))
    assert main(["docs", "--check", str(page)]) == 1


def _root(kind: Kind) -> dict[str, Any]:
    schema: dict[str, Any] = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _row(text: str, path: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(f"| `{path}` |")]
    assert len(rows) == 1, f"{path}: {len(rows)} rows in docs/api.md"
    return rows[0]


def _expected_rules(node: dict[str, Any]) -> list[str]:
    """What the row must show: enum values, bounds, patterns and CEL messages, also of list items."""
    expected = [str(v) for v in node.get("enum", [])]
    expected += [str(node[k]) for k in ("minimum", "maximum", "minLength", "maxLength") if k in node]
    expected += [str(node[k]) for k in ("minItems", "maxItems", "maxProperties", "pattern") if k in node]
    expected += [entry["message"] for entry in node.get("x-kubernetes-validations", [])]
    if isinstance(node.get("items"), dict):
        expected += _expected_rules(node["items"])
    return expected


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_spec_and_status_field_has_a_row_with_its_rules(kind: Kind) -> None:
    text = render_api_md()
    section = text.split(f"\n## {kind.kind}\n", 1)[1].split("\n## ", 1)[0]
    for part in ("spec", "status"):
        paths = [path for path, _, _ in fields(_root(kind)["properties"][part], part)]
        assert len(paths) > 3
        for path, node, _ in fields(_root(kind)["properties"][part], part):
            row = _row(section, path)
            assert node["description"].split()[0] in row, f"{kind.kind} {path}: description missing"
            for rule in _expected_rules(node):
                assert rule.replace("|", "\\|") in row, f"{kind.kind} {path}: {rule!r} missing"
            if "default" in node and not isinstance(node["default"], dict):
                assert str(node["default"]).lower() in row.lower(), f"{kind.kind} {path}: default missing"


def test_nested_and_listed_fields_are_reached() -> None:
    text = render_api_md()
    for path in (
        "spec.features.entities.timestampColumn",
        "spec.strategy.canary.steps[].weight",
        "spec.strategy.blueGreen.analysis.metrics[].query",
        "status.conditions[].lastTransitionTime",
        "status.history[].outcome",
    ):
        assert f"| `{path}` |" in text


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_short_names_and_printer_columns_are_listed(kind: Kind) -> None:
    text = render_api_md()
    for short in kind.short_names:
        assert f"short names `{short}`" in text
    for column in kind.columns:
        assert f"| {column['name']} | `{column['jsonPath']}` |" in text


# -- the hand-written pages -------------------------------------------------------------------


def _pages() -> dict[str, str]:
    """The docs pages and the README: every command they show must exist."""
    pages = {path.name: path.read_text() for path in sorted(DOCS.glob("*.md"))}
    return {**pages, "README.md": (REPO / "README.md").read_text()}


def _code(text: str) -> str:
    """Inline code spans and fenced blocks: where commands are shown."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(blocks + spans)


def test_the_pages_exist() -> None:
    assert {"api.md", "concepts.md", "operations.md", "development.md"} <= set(_pages())


def test_every_make_target_shown_exists() -> None:
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    for name, text in _pages().items():
        for target in re.findall(r"\bmake ([a-z][a-z0-9-]*)", _code(text)):
            assert target in targets, f"{name} shows `make {target}`, which the Makefile lacks"


def test_every_slipway_command_shown_exists() -> None:
    verbs = {*ACTIONS, *SCHEDULE_ACTIONS, "status"}
    for name, text in _pages().items():
        code = _code(text)
        for found in re.findall(r"kubectl slipway(?: -n \S+)* ([a-z|]+)", code):
            for verb in found.split("|"):
                assert verb in verbs, f"{name} shows `kubectl slipway {verb}`"
        # `slipway X` where a command starts: a line or code span, or after bin/ or "(".
        for command in re.findall(r"(?:^\s*|bin/|\()slipway ([a-z][a-z-]*)", code, flags=re.M):
            with pytest.raises(SystemExit) as done:
                main([command, "--help"])
            assert done.value.code == 0, f"{name} shows `slipway {command}`"


def _reasons() -> set[str]:
    return {value for key, value in vars(reasons).items() if key.isupper() and isinstance(value, str)}


def test_operations_explains_every_condition_reason() -> None:
    table = _pages()["operations.md"]
    rows = {m for m in re.findall(r"^\| `([A-Za-z]+)` \|", table, flags=re.M)}
    missing = _reasons() - rows
    assert not missing, f"docs/operations.md has no troubleshooting row for {sorted(missing)}"


def _metric_names(*files: str) -> set[str]:
    names: set[str] = set()
    for file in files:
        names |= set(re.findall(r'"(slipway_[a-z_]+)"', (REPO / file).read_text()))
    return names


def test_operations_lists_every_metric_and_only_real_ones() -> None:
    defined = _metric_names(
        "operator/slipway/handlers/metrics.py", "pipelines/predictor/metrics.py", "pipelines/predictor/monitor.py"
    )
    assert len(defined) >= 10
    text = _pages()["operations.md"]
    for metric in defined:
        assert f"`{metric}`" in text, f"docs/operations.md does not list {metric}"
    for name, page in _pages().items():
        for shown in re.findall(r"\b(slipway_[a-z_]+)", page):
            base = re.sub(r"_(bucket|sum|count)$", "", shown)
            assert base in defined, f"{name} names {shown}, which no code defines"
