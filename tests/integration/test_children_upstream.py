"""Every child object the operator builds is valid for the real third-party CRDs.

The control plane has KubeRay's, KServe's and the Gateway API's own CRDs at the versions pinned
in slipway.controlplane.upstream (what hack/kind-up.sh installs), so a server-side dry-run with
strict field validation checks each RayJob, InferenceService and HTTPRoute against the schemas
and CEL rules a real cluster applies: an unknown or misspelt field, a wrong type or a value out of
range is refused here, not first on kind. (Admission webhooks of KServe and of a Gateway are not
here: the CRD is the contract we check.)

One test per spec variant the unit tests cover (tests/unit/test_rayjob_builder.py,
tests/unit/test_modeldeployment.py). Mid-rollout children come from the real rollout engine
(`advance`) and `desired_children`, with the traffic taken to be in effect as soon as it is asked
for and the versions ready as each variant says: the states a rollout really passes through.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import kopf
import pytest
import yaml

from slipway.api.modeldeployment import AnalysisResult, ModelDeploymentSpec, ModelDeploymentStatus
from slipway.api.modelversion import ModelVersionSpec
from slipway.api.trainingrun import TrainingRunSpec
from slipway.builders.httproute import Routing
from slipway.builders.rayjob import build_rayjob
from slipway.controlplane.upstream import pinned_version
from slipway.reconcile.analysis import judge
from slipway.reconcile.modeldeployment import Observed, desired_children, plan_deployment
from slipway.reconcile.rollout import Commands, Endpoint, Observation, Traffic, advance, analysis_due, analysis_of
from slipway.reconcile.rollout import rfc3339 as stamp
from slipway.reconcile.versions import resolve_version
from tests.support import Cluster

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
ROUTING = Routing()  # the chart's defaults: slipway-system/slipway-gateway, example.com
Children = list[dict[str, Any]]


def dry_run(cluster: Cluster, objects: Children) -> tuple[int, str]:
    """`kubectl apply --dry-run=server --validate=strict` of the objects, as one stream."""
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=yaml.safe_dump_all(objects)
    )
    return result.returncode, result.stdout + result.stderr


def owned_by(kind: str, name: str, namespace: str, children: Children) -> Children:
    """The children as the handler sends them: kopf.adopt adds the owner reference."""
    owner = {
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "uid": "0c0ffee0-0000-4000-8000-000000000001"},
    }
    children = copy.deepcopy(children)
    for child in children:
        kopf.adopt(child, owner=owner)  # type: ignore[arg-type]  # a plain mapping, as the handlers pass
    return children


# == TrainingRun -> RayJob ==================================================================================
RUN_BASE: dict[str, Any] = {
    "model": "churn",
    "image": "trainer:1",
    "features": {"featureService": "churn_v1", "entities": {"uri": "file:///d/l.parquet"}, "label": "churned"},
    "artifacts": {"uri": "s3://models/churn/"},
}
# id -> (run name, attempt, spec fields over RUN_BASE)
RAYJOB_VARIANTS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "cpu-only-defaults": ("run-a", 0, {}),
    "cpu-only-several-workers": (
        "run-a",
        0,
        {"scaling": {"workers": 2, "cpusPerWorker": 4, "memoryPerWorker": "16Gi"}},
    ),
    "fractional-cpus": ("run-a", 0, {"scaling": {"workers": 3, "cpusPerWorker": 0.5}}),
    "gpu-workers": (
        "run-a",
        0,
        {"scaling": {"workers": 2, "gpusPerWorker": 1, "cpusPerWorker": 4, "memoryPerWorker": "16Gi"}},
    ),
    "artifacts-credentials-secret": (
        "run-a",
        0,
        {"artifacts": {"uri": "s3://models/churn/", "credentialsSecret": "s3"}},
    ),
    "hyperparameters-deadline-ttl": (
        "run-a",
        1,
        {
            "hyperparameters": {"learningRate": "0.001", "epochs": "10", "note": "two words"},
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 0,
        },
    ),
    # The longest name a TrainingRun may have (its CRD allows 63) and a model name of 63.
    "long-run-name": ("r" * 63, 12, {"model": "m" * 63}),
    "long-name-almost-the-rayjob-limit": ("x" * 46, 0, {}),
}


def run_spec(fields: dict[str, Any]) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate({**RUN_BASE, **fields})


@pytest.mark.parametrize("variant", list(RAYJOB_VARIANTS))
def test_the_rayjob_passes_kuberays_crd(cluster: Cluster, namespace: str, variant: str) -> None:
    name, attempt, fields = RAYJOB_VARIANTS[variant]
    rayjob = build_rayjob(name, namespace, run_spec(fields), attempt)
    code, output = dry_run(cluster, owned_by("TrainingRun", name, namespace, [rayjob]))
    assert code == 0, output
    assert "(server dry run)" in output


# == ModelDeployment -> InferenceServices and the HTTPRoute ===============================================
CANARY = {
    "type": "Canary",
    "canary": {
        "steps": [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}],
        "analysis": {"interval": "30s", "failureLimit": 0, "metrics": [{"name": "error-rate", "max": 0.01}]},
    },
}
BLUE_GREEN = {"type": "BlueGreen", "blueGreen": {"previewWeight": 20, "scaleDownDelay": "60s"}}
DIRECT = {"type": "Direct"}
SHADOW_CANARY = {**CANARY, "canary": {**CANARY["canary"], "shadow": {"percent": 100, "duration": "60s"}}}
SHADOW_BLUE_GREEN = {**BLUE_GREEN, "blueGreen": {**BLUE_GREEN["blueGreen"], "shadow": {"percent": 25}}}


def md(**fields: Any) -> ModelDeploymentSpec:
    predictor = {"image": "predictor:1", **fields.pop("predictor", {})}
    return ModelDeploymentSpec.model_validate({"model": "churn", "predictor": predictor, **fields})


def mv(version: int, model: str = "churn") -> ModelVersionSpec:
    return ModelVersionSpec.model_validate(
        {"model": model, "version": version, "uri": f"s3://m/{version}/", "gates": {"passed": True}}
    )


class Rollout:
    """The rollout engine tick by tick, with KServe and the Gateway played as instant: the traffic
    it asks for is in effect at once, and the versions in `ready` are ready."""

    def __init__(self, name: str, namespace: str, spec: ModelDeploymentSpec, versions: list[ModelVersionSpec]) -> None:
        self.name, self.namespace, self.spec, self.versions = name, namespace, spec, versions
        self.ready: set[int] = set()
        self.verdict = "Passed"
        self.now = T0
        self.status = ModelDeploymentStatus()
        self.traffic: Traffic | None = None
        self.children: Children = []

    def tick(self) -> None:
        self.now += timedelta(seconds=1)
        resolution = resolve_version(self.spec.model, self.spec.version, self.versions)
        target = resolution.version.version if resolution.version else None
        in_play = {v.version for v in self.versions}
        if self.status.stable_version is not None:
            in_play.add(self.status.stable_version)
        endpoints = {v: Endpoint(v in self.ready, "" if v in self.ready else "Starting") for v in in_play}
        applied = self.traffic.weights() if self.traffic else None
        analysis: list[AnalysisResult] | None = None
        if analysis_due(self.spec, self.status, self.now):
            settings = analysis_of(self.spec)
            assert settings is not None
            value = {"Passed": 0.001, "Failed": 0.5}[self.verdict]
            analysis = [judge(m, value, "no data", stamp(self.now)) for m in settings.metrics]
        observation = Observation(target, endpoints, applied, analysis, Commands())
        decision = advance(self.spec, 1, self.status, observation, self.now)
        self.status, self.traffic = decision.status, decision.traffic
        mine = {v.version: v for v in self.versions if v.model == self.spec.model}
        self.children, _, _ = desired_children(
            self.name, self.namespace, self.spec, self.status, self.traffic, mine, ROUTING
        )

    def until(self, done: Callable[[Rollout], bool], limit: int = 1000) -> Rollout:
        for _ in range(limit):
            self.tick()
            if done(self):
                return self
        raise AssertionError(f"never got there: {self.status.phase} {self.status.message}")

    def weights(self) -> dict[int, int]:
        assert self.traffic is not None
        return self.traffic.weights()


def established(name: str, namespace: str, spec: ModelDeploymentSpec, first: int = 1) -> Rollout:
    """Version `first` serving, stable."""
    rollout = Rollout(name, namespace, spec, [mv(first, spec.model)])
    rollout.ready = {first}
    return rollout.until(lambda r: r.status.phase == "Stable" and r.status.stable_version == first)


def first_version(name: str, namespace: str, spec: ModelDeploymentSpec, version: int = 1) -> Children:
    """What plan_deployment asks for when a deployment is created: nothing observed yet."""
    plan = plan_deployment(
        name, namespace, spec, ModelDeploymentStatus(), [mv(version, spec.model)], Observed({}), 1, T0, ROUTING
    )
    assert plan.children, plan.status.message
    return plan.children


def mid_rollout(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    done: Callable[[Rollout], bool],
    candidate_ready: bool = True,
    new_spec: ModelDeploymentSpec | None = None,
    verdict: str = "Passed",
) -> Children:
    """Version 1 stable, version 2 rolling out (with `new_spec` when given), stopped where `done`."""
    rollout = established(name, namespace, spec)
    rollout.versions = [mv(1, spec.model), mv(2, spec.model)]
    if new_spec is not None:
        rollout.spec = new_spec
    if candidate_ready:
        rollout.ready.add(2)
    rollout.verdict = verdict
    rollout.until(done)
    return rollout.children


def kinds(children: Iterable[dict[str, Any]]) -> list[str]:
    return [c["kind"] for c in children]


def canary_at_first_step(r: Rollout) -> bool:
    return r.status.step == 0 and r.weights() == {1: 90, 2: 10}


def blue_green_preview(r: Rollout) -> bool:
    return r.status.candidate_version == 2 and r.weights() == {1: 80, 2: 20}


def blue_green_switched(r: Rollout) -> bool:
    return r.status.stable_version == 2 and r.status.previous_version == 1 and r.weights() == {2: 100, 1: 0}


def shadowing(r: Rollout) -> bool:
    """The shadow stage with its mirror asked for: the route carries a RequestMirror filter."""
    return bool(r.status.shadow_percent) and r.weights() == {1: 100, 2: 0}


def direct_waiting_for_the_candidate(r: Rollout) -> bool:
    return r.status.candidate_version == 2 and r.weights() == {1: 100, 2: 0}


def rolled_back(r: Rollout) -> bool:
    return r.status.phase == "Degraded" and r.status.rolled_back_version == 2


RAY_REPLICAS = {"engine": "ray-serve", "rayServe": {"replicas": 3, "cpusPerReplica": 0.5}}
RAY_AUTOSCALING = {
    "engine": "ray-serve",
    "rayServe": {"autoscaling": {"minReplicas": 1, "maxReplicas": 4}, "cpusPerReplica": 2},
    "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
}
RAY_GPUS = {
    "engine": "ray-serve",
    "rayServe": {"replicas": 2, "gpusPerReplica": 1},
    "resources": {"limits": {"memory": "16Gi", "nvidia.com/gpu": "1"}},
}
FEATURES = {"features": {"featureService": "churn_v1", "entityKey": "customer_id"}}
CREDENTIALS = {"credentialsSecret": "models-s3", "serviceAccountName": "model-reader"}
SCALING = {
    "minReplicas": 2,
    "maxReplicas": 5,
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    "batching": {"maxBatchSize": 128, "maxWaitMs": 0.5},
}
LONG = "d" * 45  # the longest ModelDeployment name its CRD allows


def with_predictor(traffic: str, predictor: dict[str, Any], namespace: str) -> Children:
    return first_version("churn", namespace, md(traffic=traffic, predictor=predictor))


Variant = Callable[[str], Children]
DEPLOYMENT_VARIANTS: dict[str, Variant] = {
    # -- traffic: gateway (InferenceService per version, an HTTPRoute) --
    "gateway-first-version": lambda ns: first_version("churn", ns, md(traffic="gateway")),
    "gateway-canary-mid-rollout": lambda ns: mid_rollout(
        "churn", ns, md(traffic="gateway", strategy=CANARY), canary_at_first_step
    ),
    "gateway-blue-green-preview": lambda ns: mid_rollout(
        "churn", ns, md(traffic="gateway", strategy=BLUE_GREEN), blue_green_preview
    ),
    "gateway-blue-green-switched-old-warm": lambda ns: mid_rollout(
        "churn", ns, md(traffic="gateway", strategy=BLUE_GREEN), blue_green_switched
    ),
    "gateway-canary-shadow-mid-rollout": lambda ns: mid_rollout(
        "churn", ns, md(traffic="gateway", strategy=SHADOW_CANARY), shadowing
    ),
    "gateway-blue-green-shadow-mid-rollout": lambda ns: mid_rollout(
        "churn", ns, md(traffic="gateway", strategy=SHADOW_BLUE_GREEN), shadowing
    ),
    "gateway-long-names-shadow-mid-rollout": lambda ns: mid_rollout(
        LONG, ns, md(traffic="gateway", strategy=SHADOW_CANARY, model="m" * 63), shadowing
    ),
    "gateway-direct-mid-rollout": lambda ns: mid_rollout(
        "churn", ns, md(traffic="gateway", strategy=DIRECT), direct_waiting_for_the_candidate, candidate_ready=False
    ),
    "gateway-canary-rolled-back": lambda ns: mid_rollout(
        "churn", ns, md(traffic="gateway", strategy=CANARY), rolled_back, verdict="Failed"
    ),
    "gateway-canary-mid-rollout-new-engine-stable-keeps-its-own": lambda ns: mid_rollout(
        "churn",
        ns,
        md(traffic="gateway", strategy=CANARY),
        canary_at_first_step,
        new_spec=md(traffic="gateway", strategy=CANARY, predictor=RAY_REPLICAS),
    ),
    # -- traffic: kserve (one InferenceService, canaryTrafficPercent) --
    "kserve-first-version": lambda ns: first_version("churn", ns, md(traffic="kserve")),
    "kserve-canary-mid-rollout": lambda ns: mid_rollout(
        "churn", ns, md(traffic="kserve", strategy=CANARY), canary_at_first_step
    ),
    "kserve-blue-green-preview": lambda ns: mid_rollout(
        "churn", ns, md(traffic="kserve", strategy=BLUE_GREEN), blue_green_preview
    ),
    "kserve-direct-mid-rollout": lambda ns: mid_rollout(
        "churn", ns, md(traffic="kserve", strategy=DIRECT), direct_waiting_for_the_candidate, candidate_ready=False
    ),
    "kserve-canary-rolled-back": lambda ns: mid_rollout(
        "churn", ns, md(traffic="kserve", strategy=CANARY), rolled_back, verdict="Failed"
    ),
    # -- engines and predictor settings, under both traffic modes --
    **{
        f"{traffic}-{label}": partial(with_predictor, traffic, predictor)
        for traffic in ("gateway", "kserve")
        for label, predictor in (
            ("kserve-engine-replicas-resources-batching", SCALING),
            ("kserve-engine-scale-to-zero", {"minReplicas": 0, "maxReplicas": 3}),
            ("ray-serve-replicas", RAY_REPLICAS),
            ("ray-serve-autoscaling", RAY_AUTOSCALING),
            ("ray-serve-gpus-per-replica", RAY_GPUS),
            ("feature-enrichment", FEATURES),
            ("credentials-secret-and-service-account", CREDENTIALS),
        )
    },
    # -- the longest names: a 45-character deployment at version 999999, a 63-character model --
    "gateway-long-names": lambda ns: first_version(LONG, ns, md(traffic="gateway", model="m" * 63), 999999),
    "kserve-long-names": lambda ns: first_version(LONG, ns, md(traffic="kserve", model="m" * 63), 999999),
    "gateway-long-names-mid-rollout": lambda ns: mid_rollout(
        LONG, ns, md(traffic="gateway", strategy=CANARY, model="m" * 63), canary_at_first_step
    ),
}
# What each variant must have produced, so a variant cannot quietly test less than its name says.
EXPECTED_KINDS = {
    "gateway": {1: ["InferenceService", "HTTPRoute"], 2: ["InferenceService", "InferenceService", "HTTPRoute"]},
    "kserve": {1: ["InferenceService"], 2: ["InferenceService"]},
}


def expected_kinds(variant: str) -> list[str]:
    traffic = "kserve" if variant.startswith("kserve") else "gateway"
    two = any(word in variant for word in ("mid-rollout", "preview", "switched", "rolled-back"))
    return EXPECTED_KINDS[traffic][2 if two else 1]


@pytest.mark.parametrize("variant", list(DEPLOYMENT_VARIANTS))
def test_the_deployment_children_pass_kserves_and_the_gateway_apis_crds(
    cluster: Cluster, namespace: str, variant: str
) -> None:
    children = DEPLOYMENT_VARIANTS[variant](namespace)
    assert kinds(children) == expected_kinds(variant), [c["metadata"]["name"] for c in children]
    if "shadow" in variant:  # the variant tests what its name says: a route with the standard mirror
        (rule,) = children[-1]["spec"]["rules"]
        assert [f["type"] for f in rule["filters"]] == ["RequestMirror"]
    name = children[-1]["metadata"]["labels"]["slipway.dev/deployment"]
    code, output = dry_run(cluster, owned_by("ModelDeployment", name, namespace, children))
    assert code == 0, output
    assert output.count("(server dry run)") == len(children), output


# == the check itself =====================================================================================
def test_the_crds_are_the_pinned_upstream_ones(cluster: Cluster) -> None:
    result = cluster.kubectl("get", "crd", "httproutes.gateway.networking.k8s.io", "-o", "json")
    assert result.returncode == 0, result.stderr
    annotations = yaml.safe_load(result.stdout)["metadata"]["annotations"]
    assert annotations["gateway.networking.k8s.io/bundle-version"] == pinned_version("sigs.k8s.io/gateway-api")
    result = cluster.kubectl("get", "crd", "servicemonitors.monitoring.coreos.com", "-o", "json")
    annotations = yaml.safe_load(result.stdout)["metadata"]["annotations"]
    prometheus_operator = pinned_version("github.com/prometheus-operator/prometheus-operator")
    assert annotations["operator.prometheus.io/version"] == prometheus_operator.removeprefix("v")
    for crd in ("rayjobs.ray.io", "rayclusters.ray.io", "inferenceservices.serving.kserve.io"):
        result = cluster.kubectl("get", "crd", crd, "-o", "json")
        assert result.returncode == 0, result.stderr
        crd_schema = yaml.safe_load(result.stdout)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        # Generated from the Go types (controller-gen): a full schema, no open-ended spec.
        assert "x-kubernetes-preserve-unknown-fields" not in crd_schema["properties"]["spec"], crd


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("spec.bogusField", True),  # unknown: strict validation refuses it
        ("spec.rayClusterSpec.workerGroupSpecs.0.replicas", "two"),  # wrong type
    ],
)
def test_the_dry_run_refuses_what_the_real_schema_does_not_allow(
    cluster: Cluster, namespace: str, where: str, value: Any
) -> None:
    """Guards the check: minimal stand-in CRDs (x-kubernetes-preserve-unknown-fields) took both."""
    rayjob = build_rayjob("run-a", namespace, run_spec({}), 0)
    *parents, leaf = where.split(".")
    node: Any = rayjob
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[leaf] = value
    code, output = dry_run(cluster, [rayjob])
    assert code != 0, output
    assert leaf in output, output
