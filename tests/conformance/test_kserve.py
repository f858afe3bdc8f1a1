"""ModelDeployments reconciled by the real KServe controller manager (Standard mode, Gateway API):
what it builds from the InferenceServices Slipway writes, the status it writes back, and that
Slipway's own HTTPRoute points at the Service KServe really makes, and the deployment's phase once
kwok runs the predictor's pod and KServe reports it Ready."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client

from slipway.api.modeldeployment import ModelDeploymentSpec
from slipway.api.modelversion import ModelVersionSpec
from slipway.builders.httproute import route_in_effect
from slipway.builders.inferenceservice import build_inferenceservice
from tests.support import Cluster, accept_route, contract_manifests, wait_for

pytestmark = pytest.mark.integration

INFERENCE = ("serving.kserve.io", "v1beta1")
GATEWAY = ("gateway.networking.k8s.io", "v1")
SLIPWAY = ("slipway.dev", "v1alpha1")
IMAGE = "ghcr.io/example/slipway-predictor:0.1.0"  # the contract's


def namespace(cluster: Cluster, name: str) -> str:
    cluster.core.create_namespace({"metadata": {"name": name}})
    return name


def deployment_manifests(**spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The contract's ModelVersion and ModelDeployment; Prometheus on loopback (never dialled here:
    one version has nothing to analyse, but no address off this machine is configured at all)."""
    _, version, deployment = copy.deepcopy(contract_manifests())
    deployment["spec"]["prometheus"] = {"url": "http://127.0.0.1:9"}
    deployment["spec"].update(spec)
    return version, deployment


def get(cluster: Cluster, group: tuple[str, str], ns: str, plural: str, name: str) -> dict[str, Any] | None:
    items = cluster.custom.list_namespaced_custom_object(*group, ns, plural)["items"]
    return next((i for i in items if i["metadata"]["name"] == name), None)


def names(cluster: Cluster, group: tuple[str, str], ns: str, plural: str) -> list[str]:
    return sorted(
        i["metadata"]["name"] for i in cluster.custom.list_namespaced_custom_object(*group, ns, plural)["items"]
    )


def plain(cluster: Cluster, obj: Any) -> dict[str, Any]:
    """A typed client object as the API serves it (camelCase keys)."""
    as_dict: dict[str, Any] = cluster.core.api_client.sanitize_for_serialization(obj)
    return as_dict


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def kserve_status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    """The InferenceService once KServe has written its status (deploymentMode is KServe's alone)."""
    return wait_for(
        lambda: (
            (i := get(cluster, INFERENCE, ns, "inferenceservices", name))
            and (i.get("status") or {}).get("deploymentMode")
            and "PredictorReady" in conditions(i)
            and i
        ),
        timeout=60,
        what=f"KServe to write {name}'s status",
    )


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(r["uid"] == owner["metadata"]["uid"] and r.get("controller") for r in refs)


def test_kserve_runs_the_gateway_version_as_a_deployment_behind_the_service_our_route_names(
    conformance: Cluster,
) -> None:
    ns = namespace(conformance, "kserve-gateway")
    conformance.apply(ns, *deployment_manifests())
    isvc = kserve_status(conformance, ns, "churn-v3")

    # KServe took the InferenceService (its finalizer) in the mode the operator asked for, and its
    # defaulting webhook filled in the limits the operator left out.
    assert "inferenceservice.finalizers" in isvc["metadata"]["finalizers"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["status"]["deploymentMode"] == "Standard"
    (written,) = isvc["spec"]["predictor"]["containers"]
    assert written["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}

    apps = client.AppsV1Api(conformance.core.api_client)
    deployment = plain(
        conformance,
        wait_for(
            lambda: next(iter(apps.list_namespaced_deployment(ns).items), None), what="KServe's predictor Deployment"
        ),
    )
    assert deployment["metadata"]["name"] == "churn-v3-predictor" and owned_by(deployment, isvc)
    assert deployment["spec"]["replicas"] == 1  # minReplicas
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["slipway.dev/version"] == "3"  # our labels reach the pods
    (container,) = template["spec"]["containers"]
    assert (container["name"], container["image"]) == ("kserve-container", IMAGE)
    assert container["args"] == ["--model_name=churn", "--http_port=8080"]
    assert container["resources"] == written["resources"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STORAGE_URI"] == "s3://models/churn/3/" and env["SLIPWAY_MODEL_VERSION"] == "3", env
    assert env["INFERENCE_SERVICE_NAME"] == "churn-v3"  # KServe's own
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    # Readiness is the model loaded (the protocol's /v2/health/ready), not KServe's default probe
    # (the port open): KServe keeps the probe the operator sets.
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080, "scheme": "HTTP"}
    # The storage initializer is added to each pod by KServe's pod webhook, from this annotation.
    assert template["metadata"]["annotations"]["internal.serving.kserve.io/storage-initializer-sourceuri"] == (
        "s3://models/churn/3/"
    )

    service = plain(conformance, conformance.core.read_namespaced_service("churn-v3-predictor", ns))
    assert owned_by(service, isvc) and service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (80, 8080)

    autoscaling = client.AutoscalingV2Api(conformance.core.api_client)
    hpa = plain(conformance, autoscaling.read_namespaced_horizontal_pod_autoscaler("churn-v3-predictor", ns))
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "churn-v3-predictor"

    # Our HTTPRoute `churn` sends its traffic to exactly that Service and port.
    route = wait_for(lambda: get(conformance, GATEWAY, ns, "httproutes", "churn"), what="Slipway's HTTPRoute")
    (rule,) = route["spec"]["rules"]
    assert [(r["kind"], r["name"], r["port"], r["weight"]) for r in rule["backendRefs"]] == [
        ("Service", service["metadata"]["name"], port["port"], 100)
    ]

    # kwok runs the pod KServe's Deployment asks for, on the CPU node, with a loopback IP; the
    # Deployment becomes available and KServe's predictor ready.
    wait_for(
        lambda: (
            conditions(get(conformance, INFERENCE, ns, "inferenceservices", "churn-v3") or {})
            .get("PredictorReady", {})
            .get("status")
            == "True"
        ),
        timeout=60,
        what="KServe's PredictorReady from the Deployment kwok's pod made available",
    )
    (pod,) = conformance.core.list_namespaced_pod(
        ns, label_selector="serving.kserve.io/inferenceservice=churn-v3"
    ).items
    assert (pod.spec.node_name, pod.status.phase) == ("cpu-0", "Running") and pod.status.pod_ip.startswith("127.")

    # Then KServe makes HTTPRoutes of its own on its ingress gateway (ours is `churn`), and the
    # InferenceService is Ready only once a Gateway accepts them. No Gateway controller runs here:
    # the test accepts every route at its generation, as one would (tests.support.accept_route).
    def stable() -> dict[str, Any] | None:
        for route in conformance.custom.list_namespaced_custom_object(*GATEWAY, ns, "httproutes")["items"]:
            if not route_in_effect(route):
                accept_route(conformance, ns, route)
        md = get(conformance, SLIPWAY, ns, "modeldeployments", "churn") or {}
        return md if (md.get("status") or {}).get("phase") == "Stable" else None

    md = wait_for(stable, timeout=60, what="the deployment Stable once KServe reports Ready")
    assert names(conformance, GATEWAY, ns, "httproutes") == ["churn", "churn-v3", "churn-v3-predictor"]
    isvc = get(conformance, INFERENCE, ns, "inferenceservices", "churn-v3")
    assert isvc is not None
    status = isvc["status"]
    assert all(c["status"] == "True" for t, c in conditions(isvc).items() if t != "Stopped"), status
    # KServe's default domainTemplate, {{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}: what the
    # dev stack writes too; the address is the predictor Service's cluster name.
    assert status["url"] == f"http://churn-v3-{ns}.example.com", status
    assert status["address"]["url"] == f"http://churn-v3-predictor.{ns}.svc.cluster.local", status
    predictor_deployment = apps.read_namespaced_deployment("churn-v3-predictor", ns)
    assert status["observedGeneration"] == predictor_deployment.metadata.generation  # the Deployment's, not ours
    assert (md["status"]["stableVersion"], md["status"]["url"]) == (3, f"http://churn.{ns}.example.com"), md


def test_kserve_without_knative_rejects_the_kserve_traffic_mode(conformance: Cluster) -> None:
    """traffic: kserve asks for Knative mode (canaryTrafficPercent splits traffic only there); a
    Standard-only KServe (no Knative Serving) refuses it once, for good, and makes nothing."""
    ns = namespace(conformance, "kserve-knative")
    conformance.apply(ns, *deployment_manifests(traffic="kserve"))
    isvc = kserve_status(conformance, ns, "churn")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert isvc["status"]["deploymentMode"] == "Knative"

    def rejected() -> list[str]:
        events = conformance.core.list_namespaced_event(ns, field_selector="involvedObject.name=churn").items
        return [e.message for e in events if e.reason == "ServerlessModeRejected"]

    (message,) = wait_for(rejected, what="KServe to reject Knative mode")
    assert "Knative Services are not available" in message
    cond = conditions(isvc)
    assert [cond[t]["status"] for t in ("PredictorReady", "IngressReady", "Ready")] == ["Unknown"] * 3, cond
    assert not client.AppsV1Api(conformance.core.api_client).list_namespaced_deployment(ns).items
    # The deployment only sees Ready Unknown: it waits, without KServe's reason.
    md = wait_for(
        lambda: (
            (d := get(conformance, SLIPWAY, ns, "modeldeployments", "churn"))
            and "Ready is Unknown" in (d.get("status") or {}).get("message", "")
            and d
        ),
        what="the deployment to lift KServe's Ready condition",
    )
    assert (md["status"]["phase"], md["status"]["reason"]) == ("Progressing", "WaitingForCandidate"), md["status"]


def test_kserve_standard_mode_ignores_canary_traffic_percent(conformance: Cluster) -> None:
    """An InferenceService as the operator builds one for traffic: kserve mid-rollout (with
    canaryTrafficPercent), but in Standard mode: KServe's validator accepts it and makes one
    Deployment, and the next version replaces that Deployment's template in place: no second
    revision, no split, no traffic in the status; canaryTrafficPercent stays in the spec, unused."""
    ns = namespace(conformance, "kserve-canary")
    _, version, deployment = (copy.deepcopy(d) for d in contract_manifests())
    spec = ModelDeploymentSpec.model_validate({**deployment["spec"], "traffic": "kserve"})
    isvc = build_inferenceservice(
        "churn", ns, "churn", spec, ModelVersionSpec.model_validate(version["spec"]), canary_traffic_percent=10
    )
    isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Standard"
    conformance.custom.create_namespaced_custom_object(*INFERENCE, ns, "inferenceservices", isvc)
    first = kserve_status(conformance, ns, "churn")
    assert first["spec"]["predictor"]["canaryTrafficPercent"] == 10
    apps = client.AppsV1Api(conformance.core.api_client)
    wait_for(lambda: apps.list_namespaced_deployment(ns).items, what="the Deployment")

    container = {**first["spec"]["predictor"]["containers"][0], "image": "ghcr.io/example/slipway-predictor:0.2.0"}
    patch = {"spec": {"predictor": {"canaryTrafficPercent": 50, "containers": [container]}}}
    conformance.custom.patch_namespaced_custom_object(*INFERENCE, ns, "inferenceservices", "churn", patch)

    def images() -> dict[str, str] | None:
        found = {
            d.metadata.name: d.spec.template.spec.containers[0].image for d in apps.list_namespaced_deployment(ns).items
        }
        return found if container["image"] in found.values() else None

    assert wait_for(images, what="KServe to roll the Deployment") == {"churn-predictor": container["image"]}
    status = kserve_status(conformance, ns, "churn")["status"]
    predictor = status["components"]["predictor"]  # a URL once the pod runs, never a split
    assert not {"traffic", "latestCreatedRevision", "latestReadyRevision"} & predictor.keys(), status


def test_a_predictor_asking_for_more_than_kserves_default_limits_gets_its_deployment(conformance: Cluster) -> None:
    ns = namespace(conformance, "kserve-limits")
    version, deployment = deployment_manifests()
    deployment["spec"]["predictor"]["resources"] = {"requests": {"cpu": "2", "memory": "4Gi"}}
    conformance.apply(ns, version, deployment)
    predictor = conditions(kserve_status(conformance, ns, "churn-v3"))["PredictorReady"]
    assert predictor.get("reason") != "ReconcileFailed", predictor.get("message")
    apps = client.AppsV1Api(conformance.core.api_client)
    (container,) = apps.read_namespaced_deployment("churn-v3-predictor", ns).spec.template.spec.containers
    assert container.resources.requests == {"cpu": "2", "memory": "4Gi"}
