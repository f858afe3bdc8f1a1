"""The chart lints, renders what a platform team expects, and grants only what the operator uses.

helm comes from PATH or is built once from the pinned module in tools/helm, so these run on
machines without helm. CRDs are not rendered here (`helm template` leaves crds/ out); their
drift from the typed source is test_crds.py's business.
"""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

import pytest

from slipway.controlplane.helm import helm_version
from tests.support import CHART, KUBE_VERSION, RELEASE, RELEASE_NAMESPACE, render_chart, run_helm

Manifest = dict[str, Any]


def helm(*args: str) -> str:
    result = run_helm(*args)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def render(*sets: str) -> tuple[Manifest, ...]:
    return render_chart(*sets)


def only(docs: tuple[Manifest, ...], kind: str) -> Manifest:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def operator_container(docs: tuple[Manifest, ...]) -> Manifest:
    containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


@pytest.mark.skipif(shutil.which("helm") is not None, reason="helm from PATH is used, not the pinned build")
def test_built_helm_is_the_pinned_release() -> None:
    # Stamped as upstream's release builds are (ldflags), not helm's "v3.N" development default.
    assert helm("version", "--template", "{{.Version}}") == helm_version()


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["serviceMonitor.enabled=true", "grafanaDashboard.enabled=true"],
        ["watchNamespaces={ml,prod}", "traffic.backend=kserve", "objectStore.credentialsSecret=models-s3"],
        ["images.trainer=", "images.predictor=", "prometheus.url=https://prom.example.com/api"],
    ],
)
def test_chart_lints(values: list[str]) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for value in values:
        args += ["--set", value]
    assert "0 chart(s) failed" in helm(*args)


def test_chart_refuses_a_kubernetes_without_what_its_crds_need() -> None:
    result = run_helm("template", RELEASE, str(CHART), "--kube-version", "1.29.0")
    assert result.returncode != 0
    assert "requires kubeVersion" in result.stderr


def test_deployment_runs_the_operator_with_two_replicas_and_a_liveness_probe() -> None:
    docs = render()
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = operator_container(docs)
    assert container["command"][:2] == ["slipway", "operator"]
    assert container["command"][2:] == ["--liveness", "http://0.0.0.0:8080/healthz"]
    assert container["image"] == "ghcr.io/example/slipway-operator:0.1.0"  # tag defaults to appVersion

    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8000, "liveness": 8080}
    assert ports.get(probe["port"], probe["port"]) == 8080


def test_each_replica_is_named_after_its_pod_for_peering() -> None:
    env = {var["name"]: var for var in operator_container(render())["env"]}
    for name in ("POD_NAME", "POD_ID"):  # POD_ID is what Kopf reads for its peering identity
        assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_operator_runs_as_non_root_with_a_read_only_root_and_no_capabilities() -> None:
    docs = render()
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    container = operator_container(docs)["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert "add" not in container["capabilities"]


def test_operator_uses_the_chart_service_account() -> None:
    docs = render()
    account = only(docs, "ServiceAccount")["metadata"]["name"]
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account
    subjects = only(docs, "ClusterRoleBinding")["subjects"]
    assert subjects == [{"kind": "ServiceAccount", "name": account, "namespace": RELEASE_NAMESPACE}]
    assert only(docs, "ClusterRoleBinding")["roleRef"]["name"] == only(docs, "ClusterRole")["metadata"]["name"]


# That the ClusterRole grants exactly what the operator calls is tests/integration/test_rbac.py's
# business (the API server's audit log of a real operator under these rules).


def test_cluster_role_has_no_wildcards_and_nothing_on_secrets() -> None:
    rules = only(render(), "ClusterRole")["rules"]
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"wildcard {field} in {rule}"
        assert not any(resource.split("/")[0] == "secrets" for resource in rule["resources"]), rule
        assert "nonResourceURLs" not in rule
        assert "resourceNames" not in rule or rule["resourceNames"]
    assert not any(doc["kind"] in {"Role", "RoleBinding"} for doc in render())


def test_metrics_service_selects_the_operator_pods() -> None:
    docs = render()
    service = only(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_service_monitor_only_when_enabled() -> None:
    assert not [doc for doc in render() if doc["kind"] == "ServiceMonitor"]
    docs = render("serviceMonitor.enabled=true")
    monitor = only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    service = only(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [RELEASE_NAMESPACE]


def test_watch_namespaces_become_operator_arguments() -> None:
    command = operator_container(render("watchNamespaces={ml,prod}"))["command"]
    assert command[:2] == ["slipway", "operator"]
    assert command[4:] == ["--namespace", "ml", "--namespace", "prod"]


def test_image_and_replicas_are_values() -> None:
    docs = render("image.repository=registry.local/slipway", "image.tag=dev", "replicas=1")
    assert operator_container(docs)["image"] == "registry.local/slipway:dev"
    assert only(docs, "Deployment")["spec"]["replicas"] == 1


def test_grafana_dashboard_only_when_enabled_and_it_queries_metrics_that_exist() -> None:
    assert not [doc for doc in render() if doc["kind"] == "ConfigMap"]
    config_map = only(render("grafanaDashboard.enabled=true"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["slipway.json"])
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    # Every series a panel reads is one the operator or the predictor exports.
    import pipelines.predictor.metrics  # noqa: F401  (registers the predictor's metrics)
    from prometheus_client import REGISTRY

    import slipway.handlers.metrics  # noqa: F401

    exported = set(REGISTRY._names_to_collectors)  # every series name, suffixes included
    used = {name for expr in exprs for name in re.findall(r"\b(slipway_[a-z_]+)", expr)}
    assert used and used <= exported, used - exported
    assert {"slipway_rollout_candidate_weight", "slipway_requests_total", "slipway_training_runs"} <= used


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("replicas=-1", "/replicas"),
        ("logLevel=LOUD", "/logLevel"),
        ("traffic.backend=istio", "/traffic/backend"),
        ("prometheus.url=prometheus:9090", "/prometheus/url"),
        ("watchNamespaces={ML}", "/watchNamespaces/0"),
        ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
        ("securityContext.allowPrivilegeEscalation=true", "/securityContext/allowPrivilegeEscalation"),
        ("objectStore.credentialsSecret=Not_A_Name", "/objectStore/credentialsSecret"),
        ("ports.metrics=80", "/ports/metrics"),
        ("replica=2", "replica"),  # a typo is refused, not silently ignored
    ],
)
def test_values_schema_refuses_bad_values_naming_them(value: str, where: str) -> None:
    result = run_helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "--set", value)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr and where in result.stderr, result.stderr


def test_platform_defaults_reach_the_operator() -> None:
    sets = (
        "images.trainer=registry.local/trainer:2",
        "images.predictor=registry.local/predictor:2",
        "prometheus.url=http://prom.obs:9090",
        "traffic.backend=kserve",
    )
    env = {var["name"]: var.get("value") for var in operator_container(render(*sets))["env"]}
    assert env["SLIPWAY_TRAINER_IMAGE"] == "registry.local/trainer:2"
    assert env["SLIPWAY_PREDICTOR_IMAGE"] == "registry.local/predictor:2"
    assert env["SLIPWAY_PROMETHEUS_URL"] == "http://prom.obs:9090"
    assert env["SLIPWAY_TRAFFIC"] == "kserve"
    # The operator reads exactly these names.
    from slipway.api.defaults import ENV

    assert set(ENV.values()) <= set(env)


def test_readiness_probe_waits_for_kopf() -> None:
    container = operator_container(render())
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}


def test_object_store_credentials_are_a_secret_reference_only() -> None:
    assert "envFrom" not in operator_container(render())
    container = operator_container(render("objectStore.credentialsSecret=models-s3"))
    assert container["envFrom"] == [{"secretRef": {"name": "models-s3"}}]
    assert not any("SECRET" in var["name"] or "PASSWORD" in var["name"] for var in container["env"])
