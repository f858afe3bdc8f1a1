"""ModelDeployment: observe the children, run the rollout engine, and build the desired children.

traffic: gateway -> one InferenceService per version in play (`<name>-v<N>`, RawDeployment) and
one HTTPRoute `<name>` splitting over them by weight; a version is in effect once a Gateway has
accepted the route's generation and resolved its backends. traffic: kserve -> one InferenceService `<name>` whose
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
from ..builders.httproute import Routing, build_httproute, hostname, route_in_effect, route_mirrors, route_weights
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

    From what KServe really writes: the version label (ours, on the object it serves), the Ready
    condition, and (Knative) whether the newest revision is the ready one. Never from
    status.observedGeneration: KServe copies that from its Deployment or Knative Service, whose
    generation is not the InferenceService's (a replica change moves only the HPA).
    """
    if isvc is None:
        return False, "the InferenceService does not exist yet"
    metadata, status = isvc.get("metadata", {}), isvc.get("status") or {}
    if metadata.get("labels", {}).get(VERSION_LABEL) != str(version):
        return False, "the InferenceService is being updated"
    created, latest_ready = _revisions(isvc)
    conditions = {c.get("type"): c for c in status.get("conditions", [])}
    ready = conditions.get("Ready")
    if ready is None:
        return False, "the InferenceService has not reported readiness yet"
    if ready.get("status") == "True":
        if created and created != latest_ready:
            return False, f"revision {created} is not ready yet"
        return True, ready.get("message", "") or ready.get("reason", "")
    # Standard mode copies IngressReady's words into Ready ("Predictor HTTPRoute not created")
    # while the predictor itself is the cause: its own condition says why, when it says anything.
    predictor = conditions.get("PredictorReady") or {}
    cause = predictor if predictor.get("status") != "True" and predictor.get("message") else ready
    return False, cause.get("message", "") or cause.get("reason", "") or f"Ready is {ready.get('status', 'Unknown')}"


def _predictor_status(isvc: Mapping[str, Any]) -> Mapping[str, Any]:
    component: Mapping[str, Any] = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
    return component


def _revisions(isvc: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(latestCreatedRevision, latestReadyRevision) of the predictor: Knative only."""
    predictor = _predictor_status(isvc)
    return predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")


def _percent_on(isvc: Mapping[str, Any], revision: str | None) -> int | None:
    """The traffic percent KServe reports on `revision`; None when it reports no traffic at all."""
    targets = _predictor_status(isvc).get("traffic") or []
    if not targets:
        return None
    return sum(int(t.get("percent", 0)) for t in targets if t.get("revisionName") == revision)


def _version_of(isvc: Mapping[str, Any]) -> int | None:
    label = isvc.get("metadata", {}).get("labels", {}).get(VERSION_LABEL, "")
    return int(label) if str(label).isdigit() else None


class Seen(NamedTuple):
    endpoints: dict[int, Endpoint]
    applied: dict[int, int] | None
    url: str
    mirrored: dict[int, int] | None = None  # version -> percent mirrored to it in effect


def observe(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    stable: int | None,
    observed: Observed,
    routing: Routing,
    stable_revision: str | None = None,
) -> Seen:
    """Readiness per version, the traffic in effect, and the URL, from what the children report."""
    endpoints: dict[int, Endpoint] = {}
    for isvc in observed.isvcs.values():
        version = _version_of(isvc)
        if version is not None:
            endpoints[version] = Endpoint(*isvc_serves(isvc, version))
    if spec.traffic_mode == "gateway":
        route = observed.route
        if route is None or not route_in_effect(route):
            return Seen(endpoints, None, "")
        services = {predictor_service(n): v for n, i in observed.isvcs.items() if (v := _version_of(i)) is not None}
        in_effect = {services[svc]: w for svc, w in route_weights(route).items() if svc in services}
        mirrored = {services[svc]: p for svc, p in route_mirrors(route).items() if svc in services}
        return Seen(endpoints, in_effect, f"http://{hostname(name, namespace, routing)}", mirrored)
    single = observed.isvcs.get(name)
    if single is None:
        return Seen(endpoints, None, "")
    return _observe_knative(single, stable, stable_revision, endpoints)


def _observe_knative(
    isvc: Mapping[str, Any], stable: int | None, stable_revision: str | None, endpoints: dict[int, Endpoint]
) -> Seen:
    """traffic: kserve, from KServe's Knative status: the spec's version is served by the latest
    ready revision once that is not the stable version's own revision (`stable_revision`; right
    after a new spec is applied KServe still reports the old revision, ready, with all the
    traffic); the split in effect is status.components.predictor.traffic."""
    status = isvc.get("status") or {}
    version = _version_of(isvc)
    _, latest_ready = _revisions(isvc)
    changing = stable is not None and stable != version
    fresh = latest_ready is not None and not (changing and stable_revision and latest_ready == stable_revision)
    if version is not None and not fresh and endpoints.get(version, Endpoint(False)).ready:
        endpoints[version] = Endpoint(False, "KServe has not made a revision of the new spec yet")
    if changing and stable is not None and status.get("url"):
        endpoints[stable] = Endpoint(True)  # KServe's last rolled-out revision keeps serving it
    on_latest = _percent_on(isvc, latest_ready)
    applied: dict[int, int] | None = None
    if version is not None and fresh and on_latest is not None:
        applied = {version: on_latest, stable: 100 - on_latest} if changing and stable is not None else {version: 100}
    return Seen(endpoints, applied, status.get("url", ""))


def knative_revision(isvc: Mapping[str, Any] | None, version: int) -> str | None:
    """The ready revision serving `version` with all the traffic: what stableRevision records."""
    if isvc is None or _version_of(isvc) != version or not isvc_serves(isvc, version)[0]:
        return None
    _, latest_ready = _revisions(isvc)
    return latest_ready if _percent_on(isvc, latest_ready) == 100 else None


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
        mirror = None
        if traffic.mirror and traffic.candidate is not None:
            mirror = (inferenceservice_name(name, spec, traffic.candidate), traffic.mirror)
        if backends:
            children.append(build_httproute(name, namespace, spec.model, backends, routing, mirror))
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
    seen = observe(name, namespace, spec, current.stable_version, observed, routing, current.stable_revision)
    target = resolution.version.version if resolution.version else None
    decision = advance(
        spec,
        generation,
        current,
        Observation(target, seen.endpoints, seen.applied, analysis, commands or Commands(), seen.mirrored),
        now,
    )
    status = decision.status
    if seen.url:
        status.url = seen.url
    if spec.traffic_mode == "kserve" and status.stable_version is not None:
        revision = knative_revision(observed.isvcs.get(name), status.stable_version)
        if revision:
            status.stable_revision = revision
    if target is None and status.stable_version is None and status.candidate_version is None:
        status.phase, status.reason, status.message = "Pending", resolution.reason, resolution.message
        # Progressing too: the engine wrote it from the reason it had before this one (Idle on a
        # first reconcile), so the next reconcile would change it, and write the status again.
        for kind in ("Ready", "Progressing"):
            status.conditions = set_condition(
                status.conditions, kind, "False", resolution.reason, resolution.message, generation, stamp
            )
    children, keep, keep_route = desired_children(name, namespace, spec, status, decision.traffic, mine, routing)
    return Plan(children, keep, keep_route, status, decision.traffic, decision.events, retry=target is None)
