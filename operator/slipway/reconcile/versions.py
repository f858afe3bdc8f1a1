"""Which ModelVersion a ModelDeployment serves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from ..api.modelversion import ModelVersionSpec
from . import reasons

LATEST = "latest"


def gates_passed(version: ModelVersionSpec) -> bool:
    """A version registered by hand without a verdict was vouched for by whoever registered it."""
    return version.gates.passed if version.gates is not None else True


def primary_metric(version: ModelVersionSpec) -> str:
    """`metric=value` for display: the gate's metric, else the first metric recorded."""
    if version.gates is not None and version.gates.metric and version.gates.value is not None:
        return f"{version.gates.metric}={version.gates.value:g}"
    if version.metrics:
        key = sorted(version.metrics)[0]
        return f"{key}={version.metrics[key]}"
    return ""


class Resolution(NamedTuple):
    version: ModelVersionSpec | None
    reason: str
    message: str


def resolve_version(model: str, requested: int | str, versions: Iterable[ModelVersionSpec]) -> Resolution:
    """The version to serve: a number names one; 'latest' is the newest that passed its gates."""
    candidates = [v for v in versions if v.model == model]
    if str(requested) == LATEST:
        eligible = [v for v in candidates if gates_passed(v)]
        if not eligible:
            reason = reasons.NO_VERSION_PASSED_GATES if candidates else reasons.VERSION_NOT_FOUND
            return Resolution(None, reason, f"no ModelVersion of model {model} has passed its gates yet")
        best = max(eligible, key=lambda v: v.version)
        return Resolution(best, reasons.VERSION_RESOLVED, f"latest version of {model} is {best.version}")
    number = int(requested)
    match = next((v for v in candidates if v.version == number), None)
    if match is None:
        return Resolution(None, reasons.VERSION_NOT_FOUND, f"ModelVersion {number} of model {model} does not exist")
    return Resolution(match, reasons.VERSION_RESOLVED, f"serving version {number} of {model}")
