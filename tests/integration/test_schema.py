"""Admission against the real kube-apiserver: the contract is accepted, bad input refused by field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.support import Cluster, contract_manifests

pytestmark = pytest.mark.integration

TR, MV, MD = contract_manifests()


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any], dry_run: bool = False) -> tuple[int, str]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    args = ["apply", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    result = cluster.kubectl(*args, stdin=yaml.safe_dump(obj))
    return result.returncode, result.stdout + result.stderr


def test_contract_manifests_are_accepted_as_written_with_defaults(cluster: Cluster, namespace: str) -> None:
    for obj in (TR, MV, MD):
        code, output = apply(cluster, namespace, obj)
        assert code == 0, output
    stored = cluster.custom.get_namespaced_custom_object(
        "slipway.dev", "v1alpha1", namespace, "modeldeployments", "churn"
    )
    assert stored["spec"]["strategy"]["canary"]["steps"][1] == {"weight": 50, "pause": "120s"}
    # Defaults fill what was left out.
    assert stored["spec"]["strategy"]["blueGreen"]["scaleDownDelay"] == "300s"
    tr = cluster.custom.get_namespaced_custom_object(
        "slipway.dev", "v1alpha1", namespace, "trainingruns", TR["metadata"]["name"]
    )
    assert tr["spec"]["scaling"]["memoryPerWorker"] == "16Gi"
    minimal = {
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "minimal"},
        "spec": {"model": "churn", "predictor": {"image": "p:1"}},
    }
    assert apply(cluster, namespace, minimal)[0] == 0
    stored = cluster.custom.get_namespaced_custom_object(
        "slipway.dev", "v1alpha1", namespace, "modeldeployments", "minimal"
    )
    assert stored["spec"]["version"] == "latest"
    assert stored["spec"]["strategy"]["type"] == "Direct"
    # Left unset for the operator's defaults (chart values traffic.backend, prometheus.url).
    assert "traffic" not in stored["spec"] and "prometheus" not in stored["spec"]
    assert (stored["spec"]["predictor"]["minReplicas"], stored["spec"]["predictor"]["maxReplicas"]) == (1, 1)


def edit(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `base` with the dotted `path` set to `value` (or removed when value is ...)."""
    obj = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = obj
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[leaf]
    elif isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return obj


Case = tuple[str, Callable[[], dict[str, Any]], list[str]]
INVALID: list[Case] = [
    ("model not a DNS label", lambda: edit(TR, "spec.model", "Churn_Model"), ["spec.model", "DNS-1123 label"]),
    (
        "zero workers",
        lambda: edit(TR, "spec.scaling.workers", 0),
        ["spec.scaling.workers", "greater than or equal to 1"],
    ),
    (
        "negative GPUs",
        lambda: edit(TR, "spec.scaling.gpusPerWorker", -1),
        ["spec.scaling.gpusPerWorker", "greater than or equal to 0"],
    ),
    ("zero CPUs", lambda: edit(TR, "spec.scaling.cpusPerWorker", 0), ["spec.scaling.cpusPerWorker", "greater than 0"]),
    (
        "memory not a quantity",
        lambda: edit(TR, "spec.scaling.memoryPerWorker", "lots"),
        ["spec.scaling.memoryPerWorker", "quantity"],
    ),
    (
        "missing fraction above 1",
        lambda: edit(TR, "spec.dataValidation.maxMissingFraction", 1.5),
        ["spec.dataValidation.maxMissingFraction", "less than or equal to 1"],
    ),
    (
        "negative drift",
        lambda: edit(TR, "spec.dataValidation.maxDrift", -0.1),
        ["spec.dataValidation.maxDrift", "greater than or equal to 0"],
    ),
    (
        "artifact scheme",
        lambda: edit(TR, "spec.artifacts.uri", "http://models/churn/"),
        ["spec.artifacts.uri", "s3://"],
    ),
    (
        "entity dataset scheme",
        lambda: edit(TR, "spec.features.entities.uri", "ftp://x/l.parquet"),
        ["spec.features.entities.uri", "file://"],
    ),
    ("unknown evaluation metric", lambda: edit(TR, "spec.evaluation.metric", "f1"), ["spec.evaluation.metric", "auc"]),
    (
        "minimum above 1",
        lambda: edit(TR, "spec.evaluation.minimum", 1.5),
        ["spec.evaluation.minimum", "less than or equal to 1"],
    ),
    (
        "logLoss with a minimum",
        lambda: edit(TR, "spec.evaluation.metric", "logLoss"),
        ["spec.evaluation", "maximum with logLoss"],
    ),
    (
        "negative backoffLimit",
        lambda: edit(TR, "spec.backoffLimit", -1),
        ["spec.backoffLimit", "greater than or equal to 0"],
    ),
    (
        "zero deadline",
        lambda: edit(TR, "spec.activeDeadlineSeconds", 0),
        ["spec.activeDeadlineSeconds", "greater than or equal to 1"],
    ),
    ("unknown field", lambda: edit(TR, "spec.scaling.gpus", 2), ['unknown field "spec.scaling.gpus"']),
    ("missing features", lambda: edit(TR, "spec.features", ...), ["spec.features", "Required value"]),
    ("entrypoint not a module", lambda: edit(TR, "spec.entrypoint", "rm -rf /"), ["spec.entrypoint", "should match"]),
    ("version 0", lambda: edit(MV, "spec.version", 0), ["spec.version", "greater than or equal to 1"]),
    ("version uri scheme", lambda: edit(MV, "spec.uri", "https://models/churn/3/"), ["spec.uri", "s3://"]),
    ("unknown format", lambda: edit(MV, "spec.format", "onnx"), ["spec.format", "torchscript"]),
    ("version model name", lambda: edit(MV, "spec.model", "-churn"), ["spec.model", "DNS-1123 label"]),
    (
        "weights decreasing",
        lambda: edit(MD, "spec.strategy.canary.steps", [{"weight": 50}, {"weight": 10}]),
        ["spec.strategy.canary.steps", "strictly increasing"],
    ),
    (
        "weights repeated",
        lambda: edit(MD, "spec.strategy.canary.steps", [{"weight": 10}, {"weight": 10}]),
        ["spec.strategy.canary.steps", "strictly increasing"],
    ),
    (
        "weight 0",
        lambda: edit(MD, "spec.strategy.canary.steps.0.weight", 0),
        ["spec.strategy.canary.steps[0].weight", "greater than or equal to 1"],
    ),
    (
        "weight 101",
        lambda: edit(MD, "spec.strategy.canary.steps.1.weight", 101),
        ["spec.strategy.canary.steps[1].weight", "less than or equal to 100"],
    ),
    (
        "pause not a duration",
        lambda: edit(MD, "spec.strategy.canary.steps.0.pause", "soon"),
        ["spec.strategy.canary.steps[0].pause", "duration"],
    ),
    (
        "interval not a duration",
        lambda: edit(MD, "spec.strategy.canary.analysis.interval", "30"),
        ["spec.strategy.canary.analysis.interval", "duration"],
    ),
    (
        "scaleDownDelay not a duration",
        lambda: edit(MD, "spec.strategy.blueGreen.scaleDownDelay", "5 minutes"),
        ["spec.strategy.blueGreen.scaleDownDelay", "duration"],
    ),
    (
        "min above max replicas",
        lambda: edit(MD, "spec.predictor.minReplicas", 5),
        ["spec.predictor.minReplicas", "less than or equal to spec.predictor.maxReplicas"],
    ),
    ("unknown strategy", lambda: edit(MD, "spec.strategy.type", "Linear"), ["spec.strategy.type", "Canary"]),
    ("unknown traffic", lambda: edit(MD, "spec.traffic", "istio"), ["spec.traffic", "gateway"]),
    (
        "prometheus url scheme",
        lambda: edit(MD, "spec.prometheus.url", "prometheus:9090"),
        ["spec.prometheus.url", "http://"],
    ),
    ("version word", lambda: edit(MD, "spec.version", "newest"), ["spec.version", "'latest' or a version number"]),
    ("version zero", lambda: edit(MD, "spec.version", 0), ["spec.version", "'latest' or a version number"]),
    (
        "unknown analysis metric",
        lambda: edit(MD, "spec.strategy.canary.analysis.metrics.0.name", "cpu"),
        ["spec.strategy.canary.analysis.metrics[0].name", "error-rate"],
    ),
    (
        "custom metric without query",
        lambda: edit(MD, "spec.strategy.canary.analysis.metrics.3.query", ...),
        ["spec.strategy.canary.analysis.metrics[3].query", "needs a query"],
    ),
    (
        "metric without threshold",
        lambda: edit(MD, "spec.strategy.canary.analysis.metrics.0.max", ...),
        ["spec.strategy.canary.analysis.metrics[0]", "min or a max"],
    ),
    (
        "negative failureLimit",
        lambda: edit(MD, "spec.strategy.canary.analysis.failureLimit", -1),
        ["spec.strategy.canary.analysis.failureLimit", "greater than or equal to 0"],
    ),
    (
        "resource not a quantity",
        lambda: edit(MD, "spec.predictor.resources.requests.cpu", "lots"),
        ["spec.predictor.resources.requests", "quantities"],
    ),
    (
        "unknown resource",
        lambda: edit(MD, "spec.predictor.resources.requests.gpu", "1"),
        ["spec.predictor.resources.requests", "nvidia.com/gpu"],
    ),
    (
        "canary without steps",
        lambda: edit(MD, "spec.strategy.canary", ...),
        ["spec.strategy.canary", "required when type is Canary"],
    ),
    (
        "preview weight 101",
        lambda: edit(MD, "spec.strategy.blueGreen.previewWeight", 101),
        ["spec.strategy.blueGreen.previewWeight", "less than or equal to 100"],
    ),
    ("unknown engine", lambda: edit(MD, "spec.predictor.engine", "triton"), ["spec.predictor.engine", "ray-serve"]),
    (
        "zero ray replicas",
        lambda: edit(MD, "spec.predictor.rayServe", {"replicas": 0}),
        ["spec.predictor.rayServe.replicas", "greater than or equal to 1"],
    ),
    (
        "less than a millicore per ray replica",
        lambda: edit(MD, "spec.predictor.rayServe", {"cpusPerReplica": 0.0005}),
        ["spec.predictor.rayServe.cpusPerReplica", "greater than or equal to 0.001"],
    ),
    (
        "a fraction of CPUs above 1 per ray replica",
        lambda: edit(MD, "spec.predictor.rayServe", {"cpusPerReplica": 1.5}),
        ["spec.predictor.rayServe.cpusPerReplica", "whole number when above 1"],
    ),
    (
        "negative GPUs per ray replica",
        lambda: edit(MD, "spec.predictor.rayServe", {"gpusPerReplica": -1}),
        ["spec.predictor.rayServe.gpusPerReplica", "greater than or equal to 0"],
    ),
    (
        "zero autoscaling minimum",
        lambda: edit(MD, "spec.predictor.rayServe", {"autoscaling": {"minReplicas": 0, "maxReplicas": 2}}),
        ["spec.predictor.rayServe.autoscaling.minReplicas", "greater than or equal to 1"],
    ),
    (
        "autoscaling min above max",
        lambda: edit(MD, "spec.predictor.rayServe", {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}),
        [
            "spec.predictor.rayServe.autoscaling.minReplicas",
            "less than or equal to spec.predictor.rayServe.autoscaling.maxReplicas",
        ],
    ),
    (
        "shadow percent 0",
        lambda: edit(MD, "spec.strategy.canary.shadow", {"percent": 0}),
        ["spec.strategy.canary.shadow.percent", "greater than or equal to 1"],
    ),
    (
        "shadow percent 101",
        lambda: edit(MD, "spec.strategy.blueGreen.shadow", {"percent": 101}),
        ["spec.strategy.blueGreen.shadow.percent", "less than or equal to 100"],
    ),
    (
        "shadow duration not a duration",
        lambda: edit(MD, "spec.strategy.canary.shadow", {"duration": "a minute"}),
        ["spec.strategy.canary.shadow.duration", "duration"],
    ),
    (
        "canary shadow with kserve traffic",
        lambda: edit(edit(MD, "spec.traffic", "kserve"), "spec.strategy.canary.shadow", {"percent": 100}),
        ["spec.strategy.canary.shadow", "not supported with traffic: kserve"],
    ),
    (
        "blue-green shadow with kserve traffic",
        lambda: edit(edit(MD, "spec.traffic", "kserve"), "spec.strategy.blueGreen.shadow", {}),
        ["spec.strategy.blueGreen.shadow", "not supported with traffic: kserve"],
    ),
    (
        "zero batch size",
        lambda: edit(MD, "spec.predictor.batching", {"maxBatchSize": 0}),
        ["spec.predictor.batching.maxBatchSize", "greater than or equal to 1"],
    ),
    (
        "negative batch wait",
        lambda: edit(MD, "spec.predictor.batching", {"maxWaitMs": -1}),
        ["spec.predictor.batching.maxWaitMs", "greater than or equal to 0"],
    ),
]


# Names KubeRay refuses for a RayJob and KServe for an InferenceService (both want DNS-1035
# labels): accepted here, they left a TrainingRun Pending for ever and a ModelDeployment unserved.
REFUSED_NAMES = ["2026-churn", "churn.v2", "2churn", "churn.prod"]
INVALID += [
    (
        f"{kind} named {name}",
        lambda base=base, name=name: edit(base, "metadata.name", name),
        ["metadata.name", "DNS-1035"],
    )
    for kind, base in (("TrainingRun", TR), ("ModelDeployment", MD))
    for name in REFUSED_NAMES
]
INVALID.append(
    (
        "ModelDeployment name too long for its predictor Service",
        lambda: edit(MD, "metadata.name", "a" * 46),
        ["metadata.name", "at most 45 characters"],
    )
)


@pytest.mark.parametrize(("case", "make", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_refused_naming_the_field(
    cluster: Cluster, case: str, make: Callable[[], dict[str, Any]], expected: list[str]
) -> None:
    code, output = apply(cluster, "default", make(), dry_run=True)
    assert code != 0, f"{case}: accepted but should be refused"
    for text in expected:
        assert text in output, f"{case}: {text!r} not in {output!r}"


def test_at_least_25_invalid_cases() -> None:
    assert len(INVALID) >= 25


@pytest.mark.parametrize(
    ("obj", "path", "value"), [(TR, "spec.scaling.workers", 4), (MV, "spec.uri", "s3://models/churn/9/")]
)
def test_training_run_and_model_version_specs_are_immutable(
    cluster: Cluster, namespace: str, obj: dict[str, Any], path: str, value: Any
) -> None:
    assert apply(cluster, namespace, obj)[0] == 0
    code, output = apply(cluster, namespace, edit(obj, path, value))
    assert code != 0 and "spec is immutable" in output, output


def test_predictor_engines_are_accepted_with_their_defaults(cluster: Cluster, namespace: str) -> None:
    ray = edit(MD, "spec.predictor.engine", "ray-serve")
    assert apply(cluster, namespace, ray)[0] == 0
    stored = cluster.custom.get_namespaced_custom_object(
        "slipway.dev", "v1alpha1", namespace, "modeldeployments", "churn"
    )
    predictor = stored["spec"]["predictor"]
    assert predictor["batching"] == {"maxBatchSize": 64, "maxWaitMs": 2}  # both engines batch
    assert "rayServe" not in predictor  # rayServe's defaults apply when it is left out
    tuned = edit(ray, "spec.predictor.rayServe", {"autoscaling": {"maxReplicas": 3}, "cpusPerReplica": 0.5})
    code, output = apply(cluster, namespace, tuned)
    assert code == 0, output
    stored = cluster.custom.get_namespaced_custom_object(
        "slipway.dev", "v1alpha1", namespace, "modeldeployments", "churn"
    )
    assert stored["spec"]["predictor"]["rayServe"] == {
        "replicas": 2,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
        "cpusPerReplica": 0.5,
        "gpusPerReplica": 0,
    }
    # Allowed, and ignored, on the kserve engine: switching engines needs no other edit.
    code, output = apply(cluster, namespace, edit(tuned, "spec.predictor.engine", "kserve"))
    assert code == 0, output
    for whole in (2, 2.0):  # above 1, whole CPUs pass however they are written
        code, output = apply(cluster, namespace, edit(ray, "spec.predictor.rayServe", {"cpusPerReplica": whole}))
        assert code == 0, output


def test_a_shadow_stage_is_accepted_with_its_defaults(cluster: Cluster, namespace: str) -> None:
    code, output = apply(cluster, namespace, edit(MD, "spec.strategy.canary.shadow", {}))
    assert code == 0, output
    stored = cluster.custom.get_namespaced_custom_object(
        "slipway.dev", "v1alpha1", namespace, "modeldeployments", "churn"
    )
    assert stored["spec"]["strategy"]["canary"]["shadow"] == {"percent": 100, "duration": "60s"}
    # Without spec.traffic admission cannot tell (the operator's default decides); the operator refuses it then.
    code, output = apply(cluster, namespace, edit(edit(MD, "spec.traffic", ...), "spec.strategy.blueGreen.shadow", {}))
    assert code == 0, output


def test_model_deployment_spec_can_change(cluster: Cluster, namespace: str) -> None:
    assert apply(cluster, namespace, MD)[0] == 0
    code, output = apply(cluster, namespace, edit(MD, "spec.predictor.maxReplicas", 8))
    assert code == 0, output


@pytest.mark.parametrize(("base", "name"), [(TR, "churn-2026-11-22"), (TR, "c" * 63), (MD, "churn-v2"), (MD, "m" * 45)])
def test_names_the_children_can_carry_are_accepted(cluster: Cluster, base: dict[str, Any], name: str) -> None:
    code, output = apply(cluster, "default", edit(base, "metadata.name", name), dry_run=True)
    assert code == 0, output
