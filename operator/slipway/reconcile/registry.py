"""The registry's rules: version numbers per model, and which version a deployment serves now."""

from __future__ import annotations

from collections.abc import Iterable

from ..api.modelversion import ModelVersionSpec


def next_version(existing: Iterable[int], last_allocated: int) -> int:
    """One past everything ever handed out, so a deleted version's number is never reused."""
    return max(max(existing, default=0), last_allocated) + 1


def model_version_name(model: str, version: int) -> str:
    return f"{model}-v{version}"


def serving_metric(stable_version: int | None, versions: Iterable[ModelVersionSpec], metric: str) -> float | None:
    """The metric recorded by the version a deployment serves, if any."""
    if stable_version is None:
        return None
    for version in versions:
        if version.version == stable_version and metric in version.metrics:
            try:
                return float(version.metrics[metric])
            except ValueError:
                return None
    return None
