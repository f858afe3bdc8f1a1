"""`kubectl slipway status`: what it shows of a rollout's stage."""

from __future__ import annotations

from typing import Any

from slipway.cli.plugin import render_status


def deployment(**status: Any) -> dict[str, Any]:
    strategy = {"type": "Canary", "canary": {"steps": [{"weight": 10}], "shadow": {"percent": 50}}}
    return {
        "metadata": {"name": "churn", "namespace": "ml"},
        "spec": {"model": "churn", "version": "latest", "traffic": "gateway", "strategy": strategy},
        "status": {"phase": "Progressing", "stableVersion": 1, "candidateVersion": 2, "step": 0, **status},
    }


def test_the_shadow_stage_has_a_line_of_its_own() -> None:
    view = render_status(deployment(shadowPercent=50, canaryWeight=0))
    assert "  shadow:    50% mirrored to version 2, answers discarded" in view
    assert "candidate: 2  weight=0%" in view and "stable:    1  weight=100%" in view


def test_no_shadow_line_outside_the_stage() -> None:
    assert "shadow:" not in render_status(deployment(canaryWeight=10))
