"""plan_deployment: version resolution + the rollout engine + the desired children.

`Cluster` plays KServe and the Gateway for whatever a Plan asks for (InferenceServices become
ready for the versions it is told about, a route is accepted while the gateway is up), so whole
rollouts run through plan_deployment under both traffic modes.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from slipway.api.modeldeployment import AnalysisResult, ModelDeploymentSpec, ModelDeploymentStatus
from slipway.api.modelversion import ModelVersionSpec
from slipway.api.resources import DEPLOYMENT_LABEL, MODEL_LABEL, VERSION_LABEL
from slipway.builders.httproute import Routing, build_httproute, route_in_effect, route_mirrors, route_weights
from slipway.builders.inferenceservice import build_inferenceservice
from slipway.reconcile import reasons
from slipway.reconcile.analysis import judge
from slipway.reconcile.conditions import condition
from slipway.reconcile.modeldeployment import Observed, Plan, isvc_serves, observe, plan_deployment
from slipway.reconcile.rollout import DRAIN_SECONDS, Commands, analysis_due, analysis_of, rfc3339

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
ROUTING = Routing("gateways", "public", "models.test")
CANARY = {
    "type": "Canary",
    "canary": {
        "steps": [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}],
        "analysis": {"interval": "30s", "failureLimit": 0, "metrics": [{"name": "error-rate", "max": 0.01}]},
    },
}
BLUE_GREEN = {"type": "BlueGreen", "blueGreen": {"previewWeight": 0, "scaleDownDelay": "60s"}}


def md(**overrides: Any) -> ModelDeploymentSpec:
    body: dict[str, Any] = {"model": "churn", "predictor": {"image": "predictor:1"}, **overrides}
    return ModelDeploymentSpec.model_validate(body)


def mv(version: int, passed: bool = True, model: str = "churn") -> ModelVersionSpec:
    return ModelVersionSpec.model_validate(
        {"model": model, "version": version, "uri": f"s3://m/{version}/", "gates": {"passed": passed}}
    )


def isvc(version: int, ready: bool, generation: int = 1, observed: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation, "labels": {VERSION_LABEL: str(version)}},
        "spec": {"predictor": {}},
        "status": {
            "observedGeneration": observed,
            "url": "http://churn.ml",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "Starting"}],
            **status,
        },
    }


def plan(
    spec: ModelDeploymentSpec,
    versions: list[ModelVersionSpec],
    isvcs: dict[str, dict[str, Any]] | None = None,
    current: ModelDeploymentStatus | None = None,
    route: dict[str, Any] | None = None,
    commands: Commands | None = None,
) -> Plan:
    observed = Observed(isvcs or {}, route)
    status = current or ModelDeploymentStatus()
    return plan_deployment("churn", "ml", spec, status, versions, observed, 1, T0, ROUTING, None, commands)


def labels_of(children: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(c["kind"], c["metadata"]["name"], c["metadata"]["labels"].get(VERSION_LABEL, "")) for c in children]


def accepted(route: dict[str, Any], generation: int = 1, resolved: str = "True") -> dict[str, Any]:
    conditions = [
        {"type": "Accepted", "status": "True", "observedGeneration": generation},
        {"type": "ResolvedRefs", "status": resolved, "observedGeneration": generation},
    ]
    parents = [{"conditions": conditions}]
    return {**route, "metadata": {**route["metadata"], "generation": generation}, "status": {"parents": parents}}


# -- the simulated cluster ------------------------------------------------------------------------------
@dataclass
class Cluster:
    spec: ModelDeploymentSpec
    versions: list[ModelVersionSpec]
    ready: set[int] = field(default_factory=set)
    gateway_up: bool = True
    verdict: str = "Passed"
    commands: Commands = field(default_factory=Commands)
    now: datetime = T0
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    isvcs: dict[str, dict[str, Any]] = field(default_factory=dict)
    route: dict[str, Any] | None = None
    rolled_out: dict[str, int] = field(default_factory=dict)  # kserve: the last fully rolled-out version
    revisions: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # kserve: (name, template)
    ready_revision: dict[str, str] = field(default_factory=dict)
    rolled_revision: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    last: Plan | None = None

    def tick(self, dt: float = 1) -> Plan:
        self.now += timedelta(seconds=dt)
        self.settle()
        analysis: list[AnalysisResult] | None = None
        if analysis_due(self.spec, self.status, self.now):
            settings = analysis_of(self.spec)
            assert settings is not None
            value = {"Passed": 0.001, "Failed": 0.5, "Inconclusive": None}[self.verdict]
            analysis = [judge(m, value, "no data", rfc3339(self.now)) for m in settings.metrics]
        observed = Observed(copy.deepcopy(self.isvcs), copy.deepcopy(self.route))
        result = plan_deployment(
            "churn",
            "ml",
            self.spec,
            self.status,
            self.versions,
            observed,
            1,
            self.now,
            ROUTING,
            analysis,
            self.commands,
        )
        self.apply(result)
        self.status, self.last = result.status, result
        return result

    def until(self, done: Any, limit: int = 1000) -> None:
        for _ in range(limit):
            if done(self):
                return
            self.tick()
        raise AssertionError(f"stuck: {self.status.phase} {self.status.message}")

    def apply(self, result: Plan) -> None:
        for child in result.children:
            name = child["metadata"]["name"]
            if child["kind"] == "HTTPRoute":
                self.apply_route(child)
                continue
            old = self.isvcs.get(name)
            generation = old["metadata"]["generation"] if old else 0
            if old is None or old["spec"] != child["spec"] or old["metadata"]["labels"] != child["metadata"]["labels"]:
                generation += 1
            self.isvcs[name] = {
                "metadata": {"name": name, "generation": generation, "labels": child["metadata"]["labels"]},
                "spec": child["spec"],
            }
        for name in sorted(set(self.isvcs) - result.keep):
            del self.isvcs[name]
            self.deleted.append(name)
        if not result.keep_route:
            self.route = None
        self.settle()

    def apply_route(self, child: dict[str, Any]) -> None:
        generation = self.route["metadata"]["generation"] if self.route else 0
        if self.route is None or self.route["spec"] != child["spec"]:
            generation += 1
        status = self.route["status"] if self.route else {}
        self.route = {"metadata": {"generation": generation}, "spec": child["spec"], "status": status}

    def settle(self) -> None:
        """What KServe and the Gateway do with what they were given."""
        for name, obj in self.isvcs.items():
            version = int(obj["metadata"]["labels"][VERSION_LABEL])
            up = version in self.ready
            if up and "canaryTrafficPercent" not in obj["spec"]["predictor"]:
                self.rolled_out[name] = version
            obj["status"] = {
                # KServe copies its Deployment's (or Knative Service's) generation, never ours.
                "observedGeneration": 1,
                "url": f"http://{name}.ml.models.test",
                "conditions": [{"type": "Ready", "status": "True" if up else "False", "reason": "Starting"}],
            }
            if self.spec.traffic_mode == "kserve":
                obj["status"]["components"] = {"predictor": self.knative(name, obj, up)}
        if self.route is not None and self.gateway_up:
            self.route = accepted(self.route, self.route["metadata"]["generation"])

    def knative(self, name: str, obj: dict[str, Any], up: bool) -> dict[str, Any]:
        """Knative's revisions as KServe reports them: a new one per template (canaryTrafficPercent
        aside); canaryTrafficPercent to the latest ready one, the rest to the last rolled out."""
        predictor = {k: v for k, v in obj["spec"]["predictor"].items() if k != "canaryTrafficPercent"}
        template = json.dumps([predictor, obj["metadata"]["labels"]], sort_keys=True)
        revisions = self.revisions.setdefault(name, [])
        if not revisions or revisions[-1][1] != template:
            revisions.append((f"{name}-predictor-{len(revisions) + 1:05d}", template))
        created = revisions[-1][0]
        if up:
            self.ready_revision[name] = created
        ready = self.ready_revision.get(name)
        component: dict[str, Any] = {"latestCreatedRevision": created}
        if ready is None:
            return component
        percent, rolled = obj["spec"]["predictor"].get("canaryTrafficPercent"), self.rolled_revision.get(name)
        if percent is not None and rolled and rolled != ready:
            traffic = [(ready, percent, True), (rolled, 100 - percent, False)]
        else:
            traffic = [(ready, 100, True)]
            self.rolled_revision[name] = ready
        component.update(
            latestReadyRevision=ready,
            latestRolledoutRevision=self.rolled_revision[name],
            traffic=[{"revisionName": r, "percent": pct, "latestRevision": latest} for r, pct, latest in traffic],
        )
        return component

    def backends(self) -> dict[str, int]:
        assert self.route is not None
        return route_weights(self.route)

    def kserve_split(self) -> dict[int, int]:
        """Where KServe really sends requests: the spec's revision gets canaryTrafficPercent, the
        last rolled-out revision the rest."""
        obj = self.isvcs["churn"]
        version = int(obj["metadata"]["labels"][VERSION_LABEL])
        percent = obj["spec"]["predictor"].get("canaryTrafficPercent")
        previous = self.rolled_out.get("churn")
        if percent is None or previous is None or previous == version:
            return {version: 100}
        return {version: percent, previous: 100 - percent}


def established(spec: ModelDeploymentSpec, versions: list[ModelVersionSpec]) -> Cluster:
    """Version 1 serving; version 2 and later may be in `versions` once the caller adds them."""
    cluster = Cluster(spec, [v for v in versions if v.version == 1], ready={1})
    cluster.until(lambda c: c.status.phase == "Stable")
    cluster.versions = versions
    return cluster


# == builders =============================================================================================
def test_inferenceservice_carries_the_version_predictor_and_features() -> None:
    spec = md(
        predictor={
            "image": "predictor:1",
            "minReplicas": 2,
            "maxReplicas": 5,
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
            "features": {"featureService": "churn_v1", "entityKey": "customer_id"},
        }
    )
    obj = build_inferenceservice("churn-v3", "ml", "churn", spec, mv(3))
    predictor = obj["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 5)
    assert "canaryTrafficPercent" not in predictor
    container = predictor["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STORAGE_URI"] == "s3://m/3/" and env["SLIPWAY_MODEL_VERSION"] == "3"
    assert env["SLIPWAY_FEATURE_SERVICE"] == "churn_v1" and env["SLIPWAY_ENTITY_KEY"] == "customer_id"
    # No limits given: the requests are the limits (KServe's webhook would add its own defaults).
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    labels = obj["metadata"]["labels"]
    assert (labels[VERSION_LABEL], labels[DEPLOYMENT_LABEL], labels[MODEL_LABEL]) == ("3", "churn", "churn")
    assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"


def test_kserve_traffic_uses_knative_mode_and_no_feature_env_without_features() -> None:
    obj = build_inferenceservice("churn", "ml", "churn", md(traffic="kserve"), mv(1), canary_traffic_percent=0)
    assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    names = {e["name"] for e in obj["spec"]["predictor"]["containers"][0]["env"]}
    assert "SLIPWAY_FEATURE_SERVICE" not in names
    assert "resources" not in obj["spec"]["predictor"]["containers"][0]
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 0


# == nothing to serve =======================================================================================
@pytest.mark.parametrize(
    ("version", "versions", "reason"),
    [
        (5, [mv(1)], reasons.VERSION_NOT_FOUND),
        ("latest", [mv(1, passed=False)], reasons.NO_VERSION_PASSED_GATES),
        ("latest", [], reasons.VERSION_NOT_FOUND),
        ("latest", [mv(1, model="other")], reasons.VERSION_NOT_FOUND),  # another model's versions do not count
    ],
)
@pytest.mark.parametrize("traffic", ["gateway", "kserve"])
def test_nothing_to_serve_is_pending_with_a_condition_and_a_retry(
    version: int | str, versions: list[ModelVersionSpec], reason: str, traffic: str
) -> None:
    result = plan(md(version=version, traffic=traffic), versions)
    assert result.children == [] and result.retry
    assert result.keep == (frozenset() if traffic == "gateway" else frozenset({"churn"}))
    assert not result.keep_route
    status = result.status
    assert (status.phase, status.reason) == ("Pending", reason)
    resolved = condition(status.conditions, "VersionResolved")
    assert resolved is not None and (resolved.status, resolved.reason) == ("False", reason)
    ready = condition(status.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", reason)


def test_a_version_that_stops_resolving_keeps_serving_the_stable_one() -> None:
    cluster = established(md(version=1), [mv(1)])
    cluster.spec = md(version=9)
    result = cluster.tick()
    assert result.retry and result.status.phase == "Stable" and result.status.stable_version == 1
    assert labels_of(result.children) == [("InferenceService", "churn-v1", "1"), ("HTTPRoute", "churn", "")]
    resolved = condition(result.status.conditions, "VersionResolved")
    assert resolved is not None and resolved.status == "False" and "9" in resolved.message


# == gateway traffic ===========================================================================================
def test_first_version_under_gateway_traffic_is_one_inferenceservice_and_a_route() -> None:
    result = plan(md(), [mv(1)])
    assert labels_of(result.children) == [("InferenceService", "churn-v1", "1"), ("HTTPRoute", "churn", "")]
    assert result.keep == frozenset({"churn-v1"}) and result.keep_route and not result.retry
    route = result.children[-1]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    assert route["spec"]["hostnames"] == ["churn.ml.models.test"]
    assert route["spec"]["rules"] == [
        {"backendRefs": [{"kind": "Service", "name": "churn-v1-predictor", "port": 80, "weight": 100}]}
    ]
    assert route["metadata"]["labels"][DEPLOYMENT_LABEL] == "churn"
    resolved = condition(result.status.conditions, "VersionResolved")
    assert resolved is not None and resolved.status == "True" and resolved.observed_generation == 1


def route_for(weights: dict[int, int]) -> dict[str, Any]:
    return build_httproute("churn", "ml", "churn", {f"churn-v{v}": w for v, w in weights.items()}, ROUTING)


@pytest.mark.parametrize(
    ("isvcs", "route", "phase"),
    [
        ({}, None, "Progressing"),
        ({"churn-v3": isvc(3, ready=False)}, accepted(route_for({3: 100})), "Progressing"),
        # KServe's observedGeneration is its Deployment's: behind ours after a replica change (HPA only).
        ({"churn-v3": isvc(3, ready=True, generation=2, observed=1)}, accepted(route_for({3: 100})), "Stable"),
        ({"churn-v3": isvc(2, ready=True)}, accepted(route_for({3: 100})), "Progressing"),  # another version's
        ({"churn-v3": isvc(3, ready=True)}, None, "Progressing"),  # no route yet
        ({"churn-v3": isvc(3, ready=True)}, route_for({3: 100}), "Progressing"),  # not accepted yet
        ({"churn-v3": isvc(3, ready=True)}, {**accepted(route_for({3: 100})), "metadata": {"generation": 2}}, None),
        ({"churn-v3": isvc(3, ready=True)}, accepted(route_for({3: 100})), "Stable"),
    ],
)
def test_first_version_becomes_stable_once_ready_and_routed(
    isvcs: dict[str, Any], route: dict[str, Any] | None, phase: str | None
) -> None:
    current = plan(md(strategy={"type": "Direct"}), [mv(1), mv(3)]).status
    result = plan(md(strategy={"type": "Direct"}), [mv(1), mv(3)], isvcs, current, route)
    assert labels_of(result.children) == [("InferenceService", "churn-v3", "3"), ("HTTPRoute", "churn", "")]
    expected = phase or "Progressing"  # a route whose newest generation is not accepted is not in effect
    status = result.status
    assert status.phase == expected and not result.retry
    if expected == "Stable":
        assert (status.stable_version, status.candidate_version) == (3, None)
        assert status.url == "http://churn.ml.models.test"
        ready = condition(status.conditions, "Ready")
        assert ready is not None and (ready.status, ready.reason) == ("True", reasons.ENDPOINT_READY)
    else:
        assert (status.stable_version, status.candidate_version, status.canary_weight) == (None, 3, 100)


def test_gateway_canary_runs_version_by_version_behind_the_route() -> None:
    cluster = established(md(strategy=CANARY), [mv(1), mv(2)])
    assert cluster.backends() == {"churn-v1-predictor": 100}
    result = cluster.tick()
    assert result.status.candidate_version == 2 and result.status.step == 0
    assert labels_of(result.children) == [
        ("InferenceService", "churn-v1", "1"),
        ("InferenceService", "churn-v2", "2"),
        ("HTTPRoute", "churn", ""),
    ]
    assert result.keep == frozenset({"churn-v1", "churn-v2"})
    assert cluster.backends() == {"churn-v1-predictor": 100, "churn-v2-predictor": 0}  # not ready yet
    cluster.tick(30)
    assert cluster.backends() == {"churn-v1-predictor": 100, "churn-v2-predictor": 0}
    cluster.ready.add(2)
    cluster.tick()
    assert cluster.backends() == {"churn-v1-predictor": 90, "churn-v2-predictor": 10}
    cluster.until(lambda c: c.status.step == 1)
    assert cluster.backends() == {"churn-v1-predictor": 50, "churn-v2-predictor": 50}
    cluster.until(lambda c: c.status.phase == "Stable")
    assert cluster.status.stable_version == 2 and cluster.status.previous_version == 1
    assert cluster.backends() == {"churn-v1-predictor": 0, "churn-v2-predictor": 100}  # 1 drains
    assert cluster.last is not None and cluster.last.keep == frozenset({"churn-v1", "churn-v2"})
    cluster.tick(DRAIN_SECONDS)
    assert cluster.backends() == {"churn-v2-predictor": 100}
    assert set(cluster.isvcs) == {"churn-v2"} and cluster.deleted == ["churn-v1"]
    assert cluster.status.url == "http://churn.ml.models.test"


def test_gateway_direct_replacement_moves_traffic_only_once_the_new_version_is_ready() -> None:
    cluster = established(md(strategy={"type": "Direct"}), [mv(1), mv(2)])
    for _ in range(30):
        cluster.tick()
        assert cluster.backends() == {"churn-v1-predictor": 100, "churn-v2-predictor": 0}
    ready = condition(cluster.status.conditions, "Ready")
    assert ready is not None and ready.status == "True"  # version 1 serves throughout
    cluster.ready.add(2)
    cluster.tick()
    assert cluster.backends() == {"churn-v1-predictor": 0, "churn-v2-predictor": 100}
    cluster.until(lambda c: c.status.phase == "Stable" and c.status.previous_version is None)
    assert set(cluster.isvcs) == {"churn-v2"} and cluster.status.stable_version == 2


def test_gateway_rollback_keeps_the_failed_version_at_zero() -> None:
    cluster = established(md(strategy=CANARY), [mv(1), mv(2)])
    cluster.ready.add(2)
    cluster.verdict = "Failed"
    cluster.until(lambda c: c.status.phase == "Degraded")
    assert cluster.backends() == {"churn-v1-predictor": 100, "churn-v2-predictor": 0}
    assert set(cluster.isvcs) == {"churn-v1", "churn-v2"}  # kept for inspection
    assert cluster.status.rolled_back_version == 2
    cluster.tick(600)
    assert cluster.status.phase == "Degraded" and cluster.backends()["churn-v2-predictor"] == 0


def test_a_gateway_that_does_not_accept_the_route_holds_the_rollout() -> None:
    cluster = established(md(strategy=CANARY), [mv(1), mv(2)])
    cluster.ready.add(2)
    cluster.gateway_up = False
    for _ in range(120):
        cluster.tick()
    assert cluster.status.phase == "Progressing" and cluster.status.step_started_at is None
    assert not route_in_effect(cluster.route or {})
    cluster.gateway_up = True
    cluster.until(lambda c: c.status.stable_version == 2)


@pytest.mark.parametrize(
    ("route", "in_effect"),
    [
        (accepted(build_httproute("churn", "ml", "churn", {"churn-v1": 100}, ROUTING)), True),
        # Accepted, but a backend is missing: its share of the traffic would get 500s.
        (accepted(build_httproute("churn", "ml", "churn", {"churn-v1": 100}, ROUTING), resolved="False"), False),
        # Both conditions, but for an older generation of the route.
        (
            {
                **accepted(build_httproute("churn", "ml", "churn", {"churn-v1": 100}, ROUTING)),
                "metadata": {"generation": 2},
            },
            False,
        ),
        (build_httproute("churn", "ml", "churn", {"churn-v1": 100}, ROUTING), False),
    ],
)
def test_a_route_is_in_effect_once_accepted_with_its_backends_resolved(route: dict[str, Any], in_effect: bool) -> None:
    assert route_in_effect(route) is in_effect
    seen = observe("churn", "ml", md(), 1, Observed({"churn-v1": isvc(1, True)}, route), ROUTING)
    assert (seen.applied is not None) is in_effect


def test_route_weights_of_services_that_are_not_ours_are_ignored() -> None:
    route = accepted(build_httproute("churn", "ml", "churn", {"churn-v1": 100, "stranger": 0}, ROUTING))
    seen = observe("churn", "ml", md(), 1, Observed({"churn-v1": isvc(1, True)}, route), ROUTING)
    assert seen.applied == {1: 100} and seen.endpoints == {1: (True, "Starting")}


def test_a_deleted_modelversion_keeps_its_inferenceservice_and_route_entry() -> None:
    cluster = established(md(version=1), [mv(1)])
    cluster.versions = []  # the ModelVersion was deleted
    result = cluster.tick()
    assert labels_of(result.children) == [("HTTPRoute", "churn", "")]  # left as it is, not rebuilt
    assert result.keep == frozenset({"churn-v1"}) and result.keep_route
    assert cluster.backends() == {"churn-v1-predictor": 100} and set(cluster.isvcs) == {"churn-v1"}
    assert result.status.phase == "Stable" and result.retry


def test_blue_green_under_gateway_traffic_keeps_the_old_version_routable_for_the_delay() -> None:
    cluster = established(md(strategy=BLUE_GREEN), [mv(1), mv(2)])
    cluster.ready.add(2)
    cluster.until(lambda c: c.status.stable_version == 2)
    assert cluster.backends() == {"churn-v1-predictor": 0, "churn-v2-predictor": 100}
    cluster.tick(30)
    cluster.commands = Commands(abort="a1")  # an instant switch back: the old one is still running
    cluster.tick()
    assert cluster.backends() == {"churn-v1-predictor": 100, "churn-v2-predictor": 0}
    assert cluster.status.stable_version == 1
    cluster.tick()
    assert cluster.status.phase == "Degraded"


SHADOW_CANARY = {**CANARY, "canary": {**CANARY["canary"], "shadow": {"percent": 40, "duration": "60s"}}}


def mirror_filters(cluster: Cluster) -> list[dict[str, Any]]:
    assert cluster.route is not None
    return list(cluster.route["spec"]["rules"][0].get("filters", []))


def test_gateway_shadow_mirrors_with_the_standard_filter_then_splits() -> None:
    cluster = established(md(strategy=SHADOW_CANARY), [mv(1), mv(2)])
    cluster.tick()
    assert cluster.status.shadow_percent == 0 and mirror_filters(cluster) == []  # not ready: no mirror yet
    cluster.ready.add(2)
    cluster.tick()
    assert cluster.backends() == {"churn-v1-predictor": 100, "churn-v2-predictor": 0}
    assert mirror_filters(cluster) == [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"kind": "Service", "name": "churn-v2-predictor", "port": 80},
                "percent": 40,
            },
        }
    ]
    assert cluster.route is not None and route_mirrors(cluster.route) == {"churn-v2-predictor": 40}
    cluster.tick()
    assert cluster.status.step_started_at == rfc3339(cluster.now)  # the accepted route mirrors: it started
    cluster.until(lambda c: c.status.shadow_percent is None)
    assert cluster.backends() == {"churn-v1-predictor": 90, "churn-v2-predictor": 10} and mirror_filters(cluster) == []
    cluster.until(lambda c: c.status.stable_version == 2)


def test_gateway_shadow_failure_takes_the_mirror_away_and_never_splits() -> None:
    cluster = established(md(strategy=SHADOW_CANARY), [mv(1), mv(2)])
    cluster.ready.add(2)
    cluster.verdict = "Failed"
    seen: set[int] = set()
    while cluster.status.phase != "Degraded":
        cluster.tick()
        seen.add(cluster.backends().get("churn-v2-predictor", 0))
    assert seen == {0} and mirror_filters(cluster) == []
    assert "shadow: error-rate" in cluster.status.message


def test_a_shadow_stage_waits_for_the_gateway_to_accept_the_mirror() -> None:
    cluster = established(md(strategy=SHADOW_CANARY), [mv(1), mv(2)])
    cluster.ready.add(2)
    cluster.gateway_up = False
    for _ in range(120):
        cluster.tick()
    assert cluster.status.shadow_percent == 40 and cluster.status.step_started_at is None
    cluster.gateway_up = True
    cluster.until(lambda c: c.status.stable_version == 2)


@pytest.mark.parametrize(
    ("mirror", "percent"),
    [({}, 100), ({"percent": 25}, 25), ({"fraction": {"numerator": 1, "denominator": 4}}, 25)],
    ids=["unset", "percent", "fraction"],
)
def test_route_mirrors_read_percent_or_fraction(mirror: dict[str, Any], percent: int) -> None:
    route = build_httproute("churn", "ml", "churn", {"churn-v1": 100, "churn-v2": 0}, ROUTING, ("churn-v2", 50))
    route["spec"]["rules"][0]["filters"][0]["requestMirror"] = {"backendRef": {"name": "churn-v2-predictor"}, **mirror}
    assert route_mirrors(route) == {"churn-v2-predictor": percent}
    isvcs = {"churn-v1": isvc(1, True), "churn-v2": isvc(2, True)}
    seen = observe("churn", "ml", md(), 1, Observed(isvcs, accepted(route)), ROUTING)
    assert seen.mirrored == {2: percent} and seen.applied == {1: 100, 2: 0}


def test_commands_reach_the_engine() -> None:
    cluster = established(md(strategy=CANARY), [mv(1), mv(2)])
    cluster.ready.add(2)
    cluster.commands = Commands(paused=True)
    for _ in range(100):
        cluster.tick()
    assert cluster.status.phase == "Paused"
    assert cluster.last is not None and [e.reason for e in cluster.last.events] == []


# == kserve traffic ===============================================================================================
def kserve_isvc(cluster: Cluster) -> tuple[str, int | None]:
    obj = cluster.isvcs["churn"]
    return obj["metadata"]["labels"][VERSION_LABEL], obj["spec"]["predictor"].get("canaryTrafficPercent")


def test_kserve_first_version_is_one_inferenceservice_without_a_split() -> None:
    result = plan(md(traffic="kserve"), [mv(1)])
    assert labels_of(result.children) == [("InferenceService", "churn", "1")]
    assert "canaryTrafficPercent" not in result.children[0]["spec"]["predictor"]
    assert result.keep == frozenset({"churn"}) and not result.keep_route


def test_kserve_canary_sets_canary_traffic_percent_then_drops_it_when_stable() -> None:
    cluster = established(md(traffic="kserve", strategy=CANARY), [mv(1), mv(2)])
    assert kserve_isvc(cluster) == ("1", None) and cluster.route is None
    assert cluster.status.url == "http://churn.ml.models.test"
    cluster.tick()
    assert kserve_isvc(cluster) == ("2", 0)  # the new revision takes nothing until it is ready
    assert cluster.kserve_split() == {2: 0, 1: 100}
    cluster.ready.add(2)
    cluster.tick()
    assert kserve_isvc(cluster) == ("2", 10) and cluster.kserve_split() == {2: 10, 1: 90}
    cluster.until(lambda c: c.status.step == 1)
    assert kserve_isvc(cluster) == ("2", 50)
    cluster.until(lambda c: c.status.phase == "Stable")
    assert kserve_isvc(cluster) == ("2", None) and cluster.kserve_split() == {2: 100}
    assert cluster.last is not None and cluster.last.keep == frozenset({"churn"})
    assert all(c["kind"] == "InferenceService" for c in cluster.last.children)
    assert cluster.deleted == []


def test_kserve_direct_replacement_moves_traffic_only_once_the_new_version_is_ready() -> None:
    cluster = established(md(traffic="kserve", strategy={"type": "Direct"}), [mv(1), mv(2)])
    cluster.tick(30)
    assert kserve_isvc(cluster) == ("2", 0) and cluster.kserve_split() == {2: 0, 1: 100}
    cluster.ready.add(2)
    cluster.tick()
    assert kserve_isvc(cluster) == ("2", 100)
    cluster.until(lambda c: c.status.phase == "Stable")
    assert kserve_isvc(cluster) == ("2", None) and cluster.kserve_split() == {2: 100}


def test_kserve_rollback_sets_canary_traffic_percent_to_zero() -> None:
    cluster = established(md(traffic="kserve", strategy=CANARY), [mv(1), mv(2)])
    cluster.ready.add(2)
    cluster.verdict = "Failed"
    cluster.until(lambda c: c.status.phase == "Degraded")
    assert kserve_isvc(cluster) == ("2", 0) and cluster.kserve_split() == {2: 0, 1: 100}
    assert cluster.status.stable_version == 1


def test_kserve_blue_green_abort_after_the_switch_goes_back() -> None:
    # One InferenceService: the old version is not warm, so its spec is served again (a new
    # revision); 0% on the rolled-out bad revision would route nowhere else.
    cluster = established(md(traffic="kserve", strategy=BLUE_GREEN), [mv(1), mv(2)])
    cluster.ready.add(2)
    cluster.until(lambda c: c.status.stable_version == 2)
    cluster.tick(5)
    cluster.commands = Commands(abort="a1")
    cluster.tick()
    cluster.tick()
    assert cluster.status.phase == "Degraded"
    assert cluster.kserve_split() == {1: 100}


def with_percent(obj: dict[str, Any], percent: int) -> dict[str, Any]:
    return {**obj, "spec": {"predictor": {"canaryTrafficPercent": percent}}}


def without_url(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "status": {k: v for k, v in obj["status"].items() if k != "url"}}


def knative(obj: dict[str, Any], created: str, ready: str, traffic: dict[str, int]) -> dict[str, Any]:
    targets = [{"revisionName": r, "percent": p, "latestRevision": r == ready} for r, p in traffic.items()]
    component = {"latestCreatedRevision": created, "latestReadyRevision": ready, "traffic": targets}
    return {**obj, "status": {**obj["status"], "components": {"predictor": component}}}


@pytest.mark.parametrize(
    ("obj", "stable", "stable_revision", "endpoints", "applied"),
    [
        (None, 1, None, {}, None),
        (knative(isvc(2, True), "r2", "r2", {"r2": 100}), None, None, {2: (True, "Starting")}, {2: 100}),
        (knative(isvc(2, True), "r2", "r2", {"r2": 100}), 2, "r2", {2: (True, "Starting")}, {2: 100}),
        (
            knative(with_percent(isvc(2, True), 10), "r2", "r2", {"r2": 10, "r1": 90}),
            1,
            "r1",
            {2: (True, "Starting"), 1: (True, "")},
            {2: 10, 1: 90},
        ),
        # Just applied: KServe still reports the stable version's revision, ready, with all the traffic.
        (
            knative(with_percent(isvc(2, True), 10), "r1", "r1", {"r1": 100}),
            1,
            "r1",
            {2: (False, "KServe has not made a revision of the new spec yet"), 1: (True, "")},
            None,
        ),
        # The new revision exists and is not ready yet.
        (
            knative(with_percent(isvc(2, True), 10), "r2", "r1", {"r1": 100}),
            1,
            "r1",
            {2: (False, "revision r2 is not ready yet"), 1: (True, "")},
            None,
        ),
        # No revision reported: nothing is known to serve the new spec, or to be in effect.
        (
            with_percent(isvc(2, True), 10),
            1,
            "r1",
            {2: (False, "KServe has not made a revision of the new spec yet"), 1: (True, "")},
            None,
        ),
        (
            without_url(knative(with_percent(isvc(2, True), 10), "r2", "r2", {"r2": 10, "r1": 90})),
            1,
            "r1",
            {2: (True, "Starting")},
            {2: 10, 1: 90},
        ),
    ],
)
def test_kserve_observation(
    obj: dict[str, Any] | None,
    stable: int | None,
    stable_revision: str | None,
    endpoints: dict[int, tuple[bool, str]],
    applied: dict[int, int] | None,
) -> None:
    """KServe's last rolled-out revision keeps serving the stable version beside the spec's."""
    observed = Observed({"churn": obj} if obj else {})
    seen = observe("churn", "ml", md(traffic="kserve"), stable, observed, ROUTING, stable_revision)
    assert seen.endpoints == endpoints and seen.applied == applied


def test_gateway_observation_without_an_accepted_route_knows_no_weights() -> None:
    isvcs = {"churn-v1": isvc(1, True)}
    assert observe("churn", "ml", md(), 1, Observed(isvcs, None), ROUTING).applied is None
    unaccepted = route_for({1: 100})
    seen = observe("churn", "ml", md(), 1, Observed(isvcs, unaccepted), ROUTING)
    assert seen.applied is None and seen.url == "" and seen.endpoints == {1: (True, "Starting")}


# == readiness of one InferenceService ==========================================================
@pytest.mark.parametrize(
    ("obj", "version", "ready"),
    [
        (None, 1, False),
        (isvc(1, True), 1, True),
        (isvc(1, False), 1, False),
        (isvc(1, True), 2, False),  # serves another version
        # observedGeneration is the Deployment's, not ours: behind (an HPA-only change) or ahead.
        (isvc(1, True, generation=3, observed=2), 1, True),
        (isvc(1, True, generation=1, observed=4), 1, True),
        # Knative: Ready, but the newest revision is not the ready one yet.
        (
            isvc(1, True, components={"predictor": {"latestCreatedRevision": "r-2", "latestReadyRevision": "r-1"}}),
            1,
            False,
        ),
        ({"metadata": {"labels": {VERSION_LABEL: "1"}}, "status": {}}, 1, False),
        ({"metadata": {"labels": {VERSION_LABEL: "1"}}, "status": None}, 1, False),
        ({"metadata": {"labels": {VERSION_LABEL: "1"}}, "status": {"conditions": [{"type": "Ready"}]}}, 1, False),
    ],
)
def test_isvc_serves(obj: dict[str, Any] | None, version: int, ready: bool) -> None:
    serves, why = isvc_serves(obj, version)
    assert serves is ready
    if not ready:
        assert why


def test_a_waiting_isvc_says_what_its_predictor_says() -> None:
    """KServe (Standard) copies IngressReady's message into Ready while the predictor is the cause."""
    ingress = {"type": "IngressReady", "status": "False", "message": "Predictor HTTPRoute not created"}
    ready = {**ingress, "type": "Ready"}
    predictor = {"type": "PredictorReady", "status": "False", "message": "0/1 replicas available"}
    obj = {"metadata": {"labels": {VERSION_LABEL: "1"}}, "status": {"conditions": [ingress, predictor, ready]}}
    assert isvc_serves(obj, 1) == (False, "0/1 replicas available")
    predictor.pop("message")  # nothing more specific: Ready's own words
    assert isvc_serves(obj, 1) == (False, "Predictor HTTPRoute not created")


def test_latest_skips_versions_that_failed_their_gates() -> None:
    result = plan(md(), [mv(1), mv(2, passed=False)])
    assert labels_of(result.children)[0] == ("InferenceService", "churn-v1", "1")
    assert result.status.candidate_version == 1


def test_versions_of_other_models_are_ignored() -> None:
    result = plan(md(), [mv(1), mv(7, model="other")])
    assert labels_of(result.children) == [("InferenceService", "churn-v1", "1"), ("HTTPRoute", "churn", "")]


def test_kserve_direct_is_not_stable_on_the_old_revisions_readiness() -> None:
    """Right after version 2's spec is applied, KServe still reports version 1's revision: ready,
    with all the traffic, and (Knative) an observedGeneration unrelated to ours. None of it may
    count as version 2 serving."""
    spec = md(traffic="kserve", strategy={"type": "Direct"})
    cluster = established(spec, [mv(1), mv(2)])
    assert cluster.status.stable_revision == "churn-predictor-00001"
    stale = copy.deepcopy(cluster.isvcs["churn"])
    stale["metadata"]["labels"][VERSION_LABEL] = "2"
    stale["spec"]["predictor"]["canaryTrafficPercent"] = 0
    result = plan(spec, [mv(1), mv(2)], {"churn": stale}, cluster.status)
    assert result.status.stable_version == 1 and result.status.phase == "Progressing"
    cluster.ready.add(2)
    cluster.until(lambda c: c.status.stable_version == 2)
    assert cluster.status.stable_revision == "churn-predictor-00002"
