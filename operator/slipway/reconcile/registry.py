"""The registry's rules: version numbers per model, and which version a deployment serves now."""

from __future__ import annotations

from collections.abc import Iterable

from ..api.artifacts import ServingEvaluation
from ..api.modelversion import ModelVersionSpec
from ..api.trainingrun import ServingModel
from .gates import Baseline


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


def serving_model(stable_version: int | None, versions: Iterable[ModelVersionSpec]) -> ServingModel | None:
    """The served version (number and artifact directory) for the job to score on its held-out split."""
    for version in versions:
        if stable_version is not None and version.version == stable_version and version.uri:
            return ServingModel(version=version.version, uri=version.uri)
    return None


def serving_baseline(
    stable_version: int | None,
    versions: Iterable[ModelVersionSpec],
    metric: str,
    evaluated: ServingEvaluation | None,
) -> Baseline | None:
    """What mustBeatServing compares with: the serving model's metric on this run's held-out data
    when the job measured it for the version that serves now, else the version's recorded metric
    (with the reason the fair comparison was not made)."""
    if stable_version is None:
        return None
    if evaluated is not None and evaluated.version == stable_version and metric in evaluated.metrics:
        return Baseline(stable_version, evaluated.metrics[metric], True)
    if evaluated is None:
        note = "the job did not score the serving model"
    elif evaluated.version != stable_version:
        note = f"the job scored version {evaluated.version}, but version {stable_version} serves now"
    else:
        note = f"the job could not score it: {evaluated.problem or f'no {metric}'}"
    return Baseline(stable_version, serving_metric(stable_version, versions, metric), False, note)
