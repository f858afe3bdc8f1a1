"""ModelDeployment: observe the children, run the rollout engine, and build the desired children.

traffic: gateway -> one InferenceService per version in play (`<name>-v<N>`, RawDeployment) and
one HTTPRoute `<name>` splitting over them by weight; a version is in effect once a Gateway has
accepted the route's generation. traffic: kserve -> one InferenceService `<name>` whose
`canaryTrafficPercent` splits between its spec's revision and KServe's last rolled-out one.
Each version's InferenceService is built with the predictor settings that version runs with
(see predictors): during a rollout the stable version keeps its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from ..api.base import ConditionStatus
from ..api.modeldeployment import AnalysisResult, ModelDeploymentSpec, ModelDeploymentStatus
from ..api.modelversion import ModelVersionSpec
from ..api.resources import VERSION_LABEL
from ..builders.httproute import Routing, build_httproute, hostname, route_accepted, route_weights
from ..builders.inferenceservice import build_inferenceservice, inferenceservice_name, predictor_service
from .conditions import set_condition
from .predictors import predictor_of
from .rollout import Commands, Endpoint, Event, Observation, Traffic, advance, rfc3339
from .versions import resolve_version


class Observed(NamedTuple):
    """The children as last seen: InferenceServices by name, and the HTTPRoute."""

    isvcs: Mapping[str, dict[str, Any]]
    route: dict[str, Any] | None = None


class Plan(NamedTuple):
    children: list[dict[str, Any]]  # InferenceServices (and the HTTPRoute last) to apply
    keep: frozenset[str]  # InferenceService names that belong; others of this deployment go
    keep_route: bool
    status: ModelDeploymentStatus
    traffic: Traffic
    events: list[Event]
    retry: bool  # nothing to serve yet: look again later


def isvc_serves(isvc: Mapping[str, Any] | None, version: int) -> tuple[bool, str]:
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


def _version_of(isvc: Mapping[str, Any]) -> int | None:
    label = isvc.get("metadata", {}).get("labels", {}).get(VERSION_LABEL, "")
    return int(label) if str(label).isdigit() else None


class Seen(NamedTuple):
    endpoints: dict[int, Endpoint]
    applied: dict[int, int] | None
    url: str


def observe(
    name: str, namespace: str, spec: ModelDeploymentSpec, stable: int | None, observed: Observed, routing: Routing
) -> Seen:
    """Readiness per version, the traffic in effect, and the URL, from what the children report."""
    endpoints: dict[int, Endpoint] = {}
    for isvc in observed.isvcs.values():
        version = _version_of(isvc)
        if version is not None:
            endpoints[version] = Endpoint(*isvc_serves(isvc, version))
    if spec.traffic_mode == "gateway":
        route = observed.route
        if route is None or not route_accepted(route):
            return Seen(endpoints, None, "")
        services = {predictor_service(n): v for n, i in observed.isvcs.items() if (v := _version_of(i)) is not None}
        in_effect = {services[svc]: w for svc, w in route_weights(route).items() if svc in services}
        return Seen(endpoints, in_effect, f"http://{hostname(name, namespace, routing)}")
    single = observed.isvcs.get(name)
    if single is None:
        return Seen(endpoints, None, "")
    isvc = single
    status = isvc.get("status") or {}
    version = _version_of(isvc)
    if stable is not None and stable != version and status.get("url"):
        endpoints[stable] = Endpoint(True)  # KServe's last rolled-out revision keeps serving it
    applied: dict[int, int] | None = None
    if version is not None and status.get("observedGeneration", 0) >= isvc["metadata"].get("generation", 1):
        percent = isvc.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")
        if percent is None or stable is None or stable == version:
            applied = {version: 100}
        else:
            applied = {version: int(percent), stable: 100 - int(percent)}
    return Seen(endpoints, applied, status.get("url", ""))


def desired_children(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    traffic: Traffic,
    versions: Mapping[int, ModelVersionSpec],
    routing: Routing,
) -> tuple[list[dict[str, Any]], frozenset[str], bool]:
    if spec.traffic_mode == "gateway":
        weights = traffic.weights()
        backends = {inferenceservice_name(name, spec, v): w for v, w in weights.items()}
        children = [
            build_inferenceservice(
                inferenceservice_name(name, spec, v),
                namespace,
                name,
                spec,
                versions[v],
                predictor_settings=predictor_of(spec, status, v),
            )
            for v in sorted(weights)
            if v in versions  # a deleted ModelVersion's InferenceService is left as it is
        ]
        if backends:
            children.append(build_httproute(name, namespace, spec.model, backends, routing))
        return children, frozenset(backends), bool(backends)
    percent: int | None = None
    serve: int | None
    if traffic.candidate is not None:
        serve, percent = traffic.candidate, traffic.weight if traffic.stable is not None else None
    elif status.rolled_back_version is not None and traffic.stable is not None and not _was_promoted(status):
        serve, percent = status.rolled_back_version, 0  # KServe's instant rollback; kept for inspection
    else:
        serve = traffic.stable
    if serve is None or serve not in versions:
        return [], frozenset({name}), False
    # The candidate's revision gets the spec's settings; KServe keeps the stable one's as it was.
    predictor = predictor_of(spec, status, serve)
    isvc = build_inferenceservice(name, namespace, name, spec, versions[serve], percent, predictor)
    return [isvc], frozenset({name}), False


def _was_promoted(status: ModelDeploymentStatus) -> bool:
    """Whether the rolled-back version had become KServe's rolled-out revision (a switch-back after
    promotion): then 0% on it would route nowhere else, so the stable version's spec is served again
    (a new revision; not instant, unlike gateway traffic, which keeps the old version warm)."""
    return any(h.version == status.rolled_back_version and h.outcome == "Promoted" for h in status.history)


def plan_deployment(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    current: ModelDeploymentStatus,
    versions: Iterable[ModelVersionSpec],
    observed: Observed,
    generation: int | None,
    now: datetime,
    routing: Routing,
    analysis: list[AnalysisResult] | None = None,
    commands: Commands | None = None,
) -> Plan:
    stamp = rfc3339(now)
    mine = {v.version: v for v in versions if v.model == spec.model}
    resolution = resolve_version(spec.model, spec.version, mine.values())
    resolved: ConditionStatus = "True" if resolution.version else "False"
    conditions = set_condition(
        current.conditions, "VersionResolved", resolved, resolution.reason, resolution.message, generation, stamp
    )
    current = current.model_copy(update={"conditions": conditions})
    seen = observe(name, namespace, spec, current.stable_version, observed, routing)
    target = resolution.version.version if resolution.version else None
    decision = advance(
        spec,
        generation,
        current,
        Observation(target, seen.endpoints, seen.applied, analysis, commands or Commands()),
        now,
    )
    status = decision.status
    if seen.url:
        status.url = seen.url
    if target is None and status.stable_version is None and status.candidate_version is None:
        status.phase, status.reason, status.message = "Pending", resolution.reason, resolution.message
        status.conditions = set_condition(
            status.conditions, "Ready", "False", resolution.reason, resolution.message, generation, stamp
        )
    children, keep, keep_route = desired_children(name, namespace, spec, status, decision.traffic, mine, routing)
    return Plan(children, keep, keep_route, status, decision.traffic, decision.events, retry=target is None)
