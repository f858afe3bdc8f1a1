"""Which ModelVersion a deployment serves."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.api.modelversion import ModelVersionSpec
from slipway.reconcile import reasons
from slipway.reconcile.versions import gates_passed, primary_metric, resolve_version


def mv(version: int, passed: bool | None = None, model: str = "churn", **extra: Any) -> ModelVersionSpec:
    body: dict[str, Any] = {"model": model, "version": version, "uri": f"s3://m/{version}/", **extra}
    if passed is not None:
        body["gates"] = {"passed": passed, "metric": "auc", "value": 0.9}
    return ModelVersionSpec.model_validate(body)


VERSIONS = [mv(1, True), mv(2, True), mv(3, False), mv(7, True, model="other")]


@pytest.mark.parametrize(
    ("requested", "versions", "expected", "reason"),
    [
        ("latest", VERSIONS, 2, reasons.VERSION_RESOLVED),  # 3 failed its gates; 7 is another model
        ("latest", [mv(1), mv(4)], 4, reasons.VERSION_RESOLVED),  # registered by hand: vouched for
        ("latest", [mv(3, False)], None, reasons.NO_VERSION_PASSED_GATES),
        ("latest", [], None, reasons.VERSION_NOT_FOUND),
        (1, VERSIONS, 1, reasons.VERSION_RESOLVED),
        ("2", VERSIONS, 2, reasons.VERSION_RESOLVED),
        (3, VERSIONS, 3, reasons.VERSION_RESOLVED),  # pinned explicitly: the user's call
        (7, VERSIONS, None, reasons.VERSION_NOT_FOUND),
        (9, VERSIONS, None, reasons.VERSION_NOT_FOUND),
    ],
)
def test_resolve(requested: int | str, versions: list[ModelVersionSpec], expected: int | None, reason: str) -> None:
    resolution = resolve_version("churn", requested, versions)
    assert (resolution.version.version if resolution.version else None) == expected
    assert resolution.reason == reason
    assert "churn" in resolution.message


def test_gates_and_display_metric() -> None:
    assert gates_passed(mv(1)) and gates_passed(mv(1, True)) and not gates_passed(mv(1, False))
    assert primary_metric(mv(1, True)) == "auc=0.9"
    assert primary_metric(mv(1, metrics={"auc": "0.86", "accuracy": "0.8"})) == "accuracy=0.8"
    assert primary_metric(mv(1)) == ""
