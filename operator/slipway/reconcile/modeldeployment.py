"""ModelDeployment: desired InferenceService and next status.

The first version of any strategy is deployed directly (there is nothing to compare a canary
with). A later version under Canary or BlueGreen waits for the rollout engine: the stable
version keeps all traffic and a condition says why, so no traffic moves unanalysed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from ..api.base import Condition
from ..api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from ..api.modelversion import ModelVersionSpec
from ..api.resources import VERSION_LABEL
from ..builders.inferenceservice import build_inferenceservice
from . import reasons
from .conditions import condition, set_condition
from .versions import resolve_version


class Plan(NamedTuple):
    children: list[dict[str, Any]]
    status: ModelDeploymentStatus
    retry: bool  # nothing to serve yet: look again later


def inferenceservice_name(deployment_name: str) -> str:
    return deployment_name


def isvc_serves(isvc: dict[str, Any] | None, version: int) -> tuple[bool, str]:
    """Whether the observed InferenceService is ready with `version`, and why not.

    KServe's Ready condition speaks for the spec of status.observedGeneration, so readiness of an
    older spec (the previous version) does not count.
    """
    if isvc is None:
        return False, "the InferenceService does not exist yet"
    metadata, status = isvc.get("metadata", {}), isvc.get("status") or {}
    if metadata.get("labels", {}).get(VERSION_LABEL) != str(version):
        return False, "the InferenceService is being updated"
    if status.get("observedGeneration", 0) < metadata.get("generation", 1):
        return False, "KServe has not observed the new spec yet"
    for cond in status.get("conditions", []):
        if cond.get("type") == "Ready":
            return cond.get("status") == "True", cond.get("message", "") or cond.get("reason", "")
    return False, "the InferenceService has not reported readiness yet"


def plan_deployment(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    current: ModelDeploymentStatus,
    versions: Iterable[ModelVersionSpec],
    observed_isvc: dict[str, Any] | None,
    generation: int | None,
    now: str,
) -> Plan:
    conditions = current.conditions
    resolution = resolve_version(spec.model, spec.version, versions)
    conditions = set_condition(
        conditions,
        "VersionResolved",
        "True" if resolution.version else "False",
        resolution.reason,
        resolution.message,
        generation,
        now,
    )
    if resolution.version is None:
        keep = current.stable_version is not None  # keep serving what is there
        conditions = set_condition(
            conditions, "Ready", "True" if keep else "False", resolution.reason, resolution.message, generation, now
        )
        status = current.model_copy(
            update={
                "phase": current.phase if keep else "Pending",
                "conditions": conditions,
                "observed_generation": generation,
                "message": resolution.message,
            }
        )
        return Plan([], status, retry=True)

    version = resolution.version
    if spec.strategy.type != "Direct" and current.stable_version not in (None, version.version):
        return _hold_stable(name, namespace, spec, current, versions, version, conditions, generation, now)
    isvc = build_inferenceservice(inferenceservice_name(name), namespace, name, spec, version)
    ready, detail = isvc_serves(observed_isvc, version.version)
    if ready:
        message = f"serving version {version.version}"
        conditions = set_condition(conditions, "Ready", "True", reasons.ENDPOINT_READY, message, generation, now)
        status = current.model_copy(
            update={
                "phase": "Stable",
                "stable_version": version.version,
                "candidate_version": None,
                "canary_weight": 0,
                "step": None,
                "url": ((observed_isvc or {}).get("status") or {}).get("url", ""),
                "conditions": conditions,
                "observed_generation": generation,
                "message": message,
            }
        )
    else:
        message = f"rolling out version {version.version}: {detail or 'waiting for the endpoint'}"
        previous = condition(conditions, "Ready")
        still_serving = current.stable_version is not None and previous is not None and previous.status == "True"
        conditions = set_condition(
            conditions, "Ready", "True" if still_serving else "False", reasons.ROLLING_OUT, message, generation, now
        )
        status = current.model_copy(
            update={
                "phase": "Progressing",
                "candidate_version": version.version,
                "canary_weight": 100,  # Direct: all traffic moves at once
                "conditions": conditions,
                "observed_generation": generation,
                "message": message,
            }
        )
    return Plan([isvc], status, retry=False)


def _hold_stable(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    current: ModelDeploymentStatus,
    versions: Iterable[ModelVersionSpec],
    target: ModelVersionSpec,
    conditions: list[Condition],
    generation: int | None,
    now: str,
) -> Plan:
    """Keep the stable version serving: progressive rollouts are not implemented yet."""
    stable = next((v for v in versions if v.model == spec.model and v.version == current.stable_version), None)
    children = [build_inferenceservice(inferenceservice_name(name), namespace, name, spec, stable)] if stable else []
    message = (
        f"version {target.version} waits: the {spec.strategy.type} rollout engine is not implemented yet; "
        f"version {current.stable_version} keeps all traffic"
    )
    conditions = set_condition(
        conditions, "Progressing", "False", reasons.STRATEGY_NOT_IMPLEMENTED, message, generation, now
    )
    status = current.model_copy(
        update={
            "conditions": conditions,
            "observed_generation": generation,
            "candidate_version": None,
            "message": message,
        }
    )
    return Plan(children, status, retry=False)
