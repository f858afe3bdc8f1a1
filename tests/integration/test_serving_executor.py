"""The dev stack's serving: the real KServe makes the Deployments, and the stack's node and Gateway
stand-in (`slipway.devstack.serving`) runs their pods as model servers behind a real nginx.

A dev stack without training (its own control plane, KServe's controller manager,
kube-controller-manager, kube-scheduler, the operator, Prometheus), tiny TorchScript models served
by `pipelines.predictor`, and InferenceServices and HTTPRoutes applied as the operator writes them.
Checked: what KServe makes of them and the status it writes once the pods run here; weighted
splits through nginx (counted by each server's own metrics); a new template rolled out by the real
Deployment controller with the old pod's process stopped; a model that does not load; Prometheus
scraping the servers; a restarted executor; the garbage collector taking it all away.
"""

from __future__ import annotations

import collections
import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

from slipway.devstack.cluster import kubectl
from slipway.devstack.kubelet import NODE
from slipway.devstack.modelserver import marked
from slipway.devstack.prometheus import TARGETS_FILE
from slipway.devstack.serving import MARKER_ENV
from slipway.devstack.stack import DevStack
from tests.support import wait_for, write_model_run

pytestmark = pytest.mark.integration

ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")
FEATURES = ["sessions_30d", "monthly_charges"]
NS = "serving"
READY_TIMEOUT = 240  # KServe, the Deployment controller, then a server importing torch: two busy cores


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("serving-stack"), with_training=False) as running:
        kubectl(running.plane.assets.kubectl, running.kubeconfig, "create", "namespace", NS)
        yield running


@pytest.fixture(scope="module")
def api(stack: DevStack) -> client.ApiClient:
    return config.new_client_from_config(str(stack.kubeconfig))  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny trained-looking run directories (TorchScript + manifest), as training leaves them."""
    root = tmp_path_factory.mktemp("artifacts")
    return {
        version: write_model_run(root / "runs" / f"churn-{version}", seed=int(version), features=tuple(FEATURES))
        for version in ("1", "2")
    }


def apply(stack: DevStack, *objects: dict[str, Any]) -> None:
    path = stack.workdir / "applied.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    kubectl(stack.plane.assets.kubectl, stack.kubeconfig, "apply", "-n", NS, "-f", str(path))


def isvc(name: str, run_dir: Path, version: str) -> dict[str, Any]:
    container = {
        "name": "kserve-container",
        "image": "local-dev",
        "args": ["--model_name=churn", "--http_port=8080"],
        "env": [
            {"name": "STORAGE_URI", "value": f"file://{run_dir}/"},
            {"name": "SLIPWAY_MODEL", "value": "churn"},
            {"name": "SLIPWAY_MODEL_VERSION", "value": version},
            {"name": "SLIPWAY_TORCH_THREADS", "value": "1"},
        ],
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": {"slipway.dev/model": "churn", "slipway.dev/version": version},
            "annotations": {"serving.kserve.io/deploymentMode": "Standard"},
        },
        "spec": {"predictor": {"minReplicas": 1, "maxReplicas": 1, "containers": [container]}},
    }


def httproute(name: str, weights: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "slipway-gateway", "namespace": "slipway-system"}],
            "hostnames": [f"{name}.{NS}.example.com"],
            "rules": [
                {"backendRefs": [{"name": f"{b}-predictor", "port": 80, "weight": w} for b, w in weights.items()]}
            ],
        },
    }


def get(api: client.ApiClient, kind: tuple[str, str, str], name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(kind[0], kind[1], NS, kind[2], name)
    return obj


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def ready(api: client.ApiClient, name: str) -> dict[str, Any] | None:
    """The InferenceService once KServe says Ready (its Deployment available, its routes accepted)."""
    obj = get(api, ISVC, name)
    return obj if conditions(obj).get("Ready", {}).get("status") == "True" else None


def pods(api: client.ApiClient, isvc_name: str) -> list[client.V1Pod]:
    selector = f"serving.kserve.io/inferenceservice={isvc_name}"
    return list(client.CoreV1Api(api).list_namespaced_pod(NS, label_selector=selector).items)


def route_in_effect(api: client.ApiClient, name: str) -> dict[str, Any] | None:
    """The route once the gateway says its current generation's weights are in effect."""
    route = get(api, ROUTE, name)
    for parent in (route.get("status") or {}).get("parents", []):
        accepted = {c["type"]: c for c in parent["conditions"]}.get("Accepted", {})
        if accepted.get("status") == "True" and accepted.get("observedGeneration") == route["metadata"]["generation"]:
            return route
    return None


def addresses(stack: DevStack) -> dict[str, str]:
    """Pod -> address of every model server, from the Prometheus targets file."""
    doc = json.loads((stack.workdir / TARGETS_FILE).read_text())
    return {group["labels"]["pod"]: group["targets"][0] for group in doc}


def address_of(stack: DevStack, api: client.ApiClient, isvc_name: str) -> str:
    (pod,) = pods(api, isvc_name)
    return addresses(stack)[pod.metadata.name]


def predict(gateway: str, host: str, n: int = 1) -> collections.Counter[int]:
    body = json.dumps({"instances": [[3.0, 70.5], [1.0, None]]}).encode()
    codes: collections.Counter[int] = collections.Counter()
    for _ in range(n):
        request = urllib.request.Request(f"{gateway}/v1/models/churn:predict", data=body, headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                predictions = json.loads(response.read())["predictions"]
                assert len(predictions) == 2 and all(0 < p < 1 for p in predictions)
                codes[response.status] += 1
        except urllib.error.HTTPError as error:
            codes[error.code] += 1
    return codes


def served(address: str) -> float:
    """Successful predict requests a model server counted itself (`slipway_requests_total`)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "slipway_requests_total" and sample.labels.get("outcome") == "success":
                total += sample.value
    return total


def test_kserve_deploys_and_the_gateway_splits_traffic_by_weight(
    stack: DevStack, api: client.ApiClient, models: dict[str, Path]
) -> None:
    apply(stack, isvc("churn-v1", models["1"], "1"), isvc("churn-v2", models["2"], "2"))
    apply(stack, httproute("churn", {"churn-v1": 80, "churn-v2": 20}))
    v1 = wait_for(lambda: ready(api, "churn-v1"), timeout=READY_TIMEOUT, what="churn-v1 Ready")
    wait_for(lambda: ready(api, "churn-v2"), timeout=READY_TIMEOUT, what="churn-v2 Ready")
    route = wait_for(lambda: route_in_effect(api, "churn"), timeout=60, what="the route in effect")

    # KServe's own status, from its Deployment and the routes it made on our Gateway.
    status = v1["status"]
    assert status["deploymentMode"] == "Standard"
    assert status["url"] == f"http://churn-v1-{NS}.example.com"  # KServe's default domainTemplate
    assert status["address"]["url"] == f"http://churn-v1-predictor.{NS}.svc.cluster.local"
    assert all(c["status"] == "True" for t, c in conditions(v1).items() if t != "Stopped"), status
    deployment = client.AppsV1Api(api).read_namespaced_deployment("churn-v1-predictor", NS)
    assert deployment.status.available_replicas == 1
    (pod,) = pods(api, "churn-v1")
    assert (pod.spec.node_name, pod.status.phase, pod.status.pod_ip) == (NODE, "Running", "127.0.0.1")
    (container,) = pod.status.container_statuses
    assert container.ready and container.restart_count == 0 and container.state.running is not None
    kserve_routes = {
        r["metadata"]["name"]
        for r in client.CustomObjectsApi(api).list_namespaced_custom_object(*ROUTE[:2], NS, ROUTE[2])["items"]
    }
    assert {"churn-v1", "churn-v1-predictor", "churn"} <= kserve_routes  # KServe's two, and ours

    (parent,) = route["status"]["parents"]
    assert parent["controllerName"] == "slipway.dev/devstack-gateway"
    assert {c["type"]: c["status"] for c in parent["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}

    host = f"churn.{NS}.example.com"
    servers = {name: address_of(stack, api, f"churn-{name}") for name in ("v1", "v2")}
    before = {name: served(address) for name, address in servers.items()}
    assert predict(stack.gateway_url, host, 200) == {200: 200}
    counts = {name: served(address) - before[name] for name, address in servers.items()}
    assert counts["v1"] + counts["v2"] == 200
    assert 130 <= counts["v1"] <= 190, counts  # 160 expected; binomial sd about 5.7

    # KServe's own hosts answer through KServe's routes; an unknown host is a 404.
    assert predict(stack.gateway_url, status["url"].removeprefix("http://"), 3) == {200: 3}
    assert predict(stack.gateway_url, "nobody.example.com", 1) == {404: 1}

    # Weights 0/100: churn-v1 stays warm and gets nothing, once the route status says so.
    apply(stack, httproute("churn", {"churn-v1": 0, "churn-v2": 100}))
    wait_for(lambda: route_in_effect(api, "churn"), timeout=60, what="the new weights in effect")
    before = {name: served(address) for name, address in servers.items()}
    assert predict(stack.gateway_url, host, 50) == {200: 50}
    assert served(servers["v1"]) == before["v1"] and served(servers["v2"]) == before["v2"] + 50

    # A backend with no Service: ResolvedRefs False, its share answers 500.
    apply(stack, httproute("churn", {"churn-v2": 50, "churn-v9": 50}))
    route = wait_for(lambda: route_in_effect(api, "churn"), timeout=60, what="the broken route in effect")
    resolved = {c["type"]: c for c in route["status"]["parents"][0]["conditions"]}["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    codes = predict(stack.gateway_url, host, 60)
    assert set(codes) == {200, 500} and codes[200] + codes[500] == 60

    # Prometheus scrapes every model server, labelled by namespace, InferenceService and pod.
    def scraped() -> list[dict[str, Any]] | None:
        return stack.prometheus.query(f'up{{namespace="{NS}", isvc="churn-v1"}} == 1') or None

    (sample,) = wait_for(scraped, timeout=60, what="Prometheus to scrape churn-v1")
    assert sample["metric"]["pod"] == pod.metadata.name


def mirrored_route(name: str, weights: dict[str, int], mirror: str, percent: int) -> dict[str, Any]:
    """A route as the operator writes it in a shadow stage: Gateway API's standard RequestMirror."""
    route = httproute(name, weights)
    target = {"name": f"{mirror}-predictor", "port": 80}
    route["spec"]["rules"][0]["filters"] = [
        {"type": "RequestMirror", "requestMirror": {"backendRef": target, "percent": percent}}
    ]
    return route


def answered_by(gateway: str, host: str, n: int) -> collections.Counter[tuple[int, str]]:
    """(status, the upstream nginx took the answer from) for `n` predict requests."""
    body = json.dumps({"instances": [[3.0, 70.5]]}).encode()
    seen: collections.Counter[tuple[int, str]] = collections.Counter()
    for _ in range(n):
        request = urllib.request.Request(f"{gateway}/v1/models/churn:predict", data=body, headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                seen[(response.status, response.headers.get("X-Slipway-Upstream", ""))] += 1
        except urllib.error.HTTPError as error:
            seen[(error.code, error.headers.get("X-Slipway-Upstream", ""))] += 1
    return seen


def test_a_request_mirror_sends_copies_while_every_answer_comes_from_the_primary(
    stack: DevStack, api: client.ApiClient
) -> None:
    wait_for(lambda: ready(api, "churn-v1"), timeout=READY_TIMEOUT, what="churn-v1 Ready")
    wait_for(lambda: ready(api, "churn-v2"), timeout=READY_TIMEOUT, what="churn-v2 Ready")
    apply(stack, mirrored_route("shadow", {"churn-v1": 100, "churn-v2": 0}, "churn-v2", 100))
    route = wait_for(lambda: route_in_effect(api, "shadow"), timeout=60, what="the mirrored route in effect")
    (parent,) = route["status"]["parents"]
    assert {c["type"]: c["status"] for c in parent["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}
    host = f"shadow.{NS}.example.com"
    (v1_pod,) = pods(api, "churn-v1")
    servers = {name: address_of(stack, api, f"churn-{name}") for name in ("v1", "v2")}
    before = {name: served(address) for name, address in servers.items()}
    assert answered_by(stack.gateway_url, host, 40) == {(200, f"{NS}.{v1_pod.metadata.name}"): 40}
    assert served(servers["v1"]) == before["v1"] + 40
    # The copies reach churn-v2's own server, counted by its own metrics (what analysis reads).
    wait_for(lambda: served(servers["v2"]) == before["v2"] + 40, timeout=10, what="40 copies counted by churn-v2")

    # Half the requests copied: about 40 of 80, every answer still churn-v1's.
    apply(stack, mirrored_route("shadow", {"churn-v1": 100, "churn-v2": 0}, "churn-v2", 50))
    wait_for(lambda: route_in_effect(api, "shadow"), timeout=60, what="the 50% mirror in effect")
    before = {name: served(address) for name, address in servers.items()}
    assert answered_by(stack.gateway_url, host, 80) == {(200, f"{NS}.{v1_pod.metadata.name}"): 80}
    copies = wait_for(lambda: served(servers["v2"]) - before["v2"] >= 20 and served(servers["v2"]) - before["v2"])
    assert copies <= 60, copies  # 40 expected; binomial sd about 4.5

    # A mirror to a Service that does not exist: ResolvedRefs False; users are still answered.
    apply(stack, mirrored_route("shadow", {"churn-v1": 100}, "churn-v9", 100))
    route = wait_for(lambda: route_in_effect(api, "shadow"), timeout=60, what="the broken mirror in effect")
    resolved = {c["type"]: c for c in route["status"]["parents"][0]["conditions"]}["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert answered_by(stack.gateway_url, host, 5) == {(200, f"{NS}.{v1_pod.metadata.name}"): 5}
    kubectl(stack.plane.assets.kubectl, stack.kubeconfig, "delete", "httproute", "-n", NS, "shadow")


def test_a_new_template_rolls_out_a_new_pod_and_stops_the_old_process(
    stack: DevStack, api: client.ApiClient, models: dict[str, Path]
) -> None:
    wait_for(lambda: ready(api, "churn-v1"), timeout=READY_TIMEOUT, what="churn-v1 Ready")
    (old,) = pods(api, "churn-v1")
    old_address = addresses(stack)[old.metadata.name]
    apply(stack, isvc("churn-v1", models["2"], "2"))  # a new pod template: the Deployment rolls

    def rolled() -> list[client.V1Pod] | None:
        now = pods(api, "churn-v1")
        done = len(now) == 1 and now[0].metadata.uid != old.metadata.uid and now[0].status.container_statuses
        return now if done and now[0].status.container_statuses[0].ready and ready(api, "churn-v1") else None

    (new,) = wait_for(rolled, timeout=READY_TIMEOUT, what="the new pod ready and the old one gone")
    assert addresses(stack)[new.metadata.name] != old_address
    with pytest.raises(OSError):  # the old pod's process stopped once its pod was deleted
        served(old_address)
    assert predict(stack.gateway_url, f"churn-v1-{NS}.example.com", 3) == {200: 3}


def test_a_model_that_does_not_load_restarts_with_its_log_and_is_never_ready(
    stack: DevStack, api: client.ApiClient, tmp_path: Path
) -> None:
    apply(stack, isvc("broken", tmp_path / "nothing-here", "1"))

    def crashing() -> client.V1ContainerStatus | None:
        found = pods(api, "broken")
        statuses = (found[0].status.container_statuses or []) if found else []
        return statuses[0] if statuses and statuses[0].last_state.terminated else None

    status = wait_for(crashing, timeout=READY_TIMEOUT, what="the broken server's exit in its pod status")
    assert not status.ready and status.last_state.terminated.exit_code != 0
    assert "manifest.json" in status.last_state.terminated.message  # the tail of its log
    isvc_status = get(api, ISVC, "broken")
    assert conditions(isvc_status).get("Ready", {}).get("status") != "True"
    assert predict(stack.gateway_url, f"broken-{NS}.example.com", 1) in ({503: 1}, {404: 1})


def test_a_restarted_executor_kills_what_it_left_and_reruns_the_pods(stack: DevStack, api: client.ApiClient) -> None:
    wait_for(lambda: ready(api, "churn-v2"), timeout=READY_TIMEOUT, what="churn-v2 Ready")
    gateway = stack.gateway_url
    leftovers = marked(MARKER_ENV, str(stack.workdir))  # the model servers and theirs
    leftovers.append(int((stack.workdir / "serving" / "gateway" / "nginx.pid").read_text()))  # and nginx
    assert len(leftovers) >= 3, leftovers
    assert stack.serving is not None
    stack.serving.send_signal(signal.SIGKILL)  # no cleanup, as when a node dies
    stack.serving.wait()
    assert all(Path(f"/proc/{pid}").exists() for pid in leftovers)  # orphans, still running
    stack._start_serving()
    assert stack.gateway_url == gateway  # the same port: clients keep their URL
    wait_for(lambda: not [pid for pid in leftovers if _running(pid)], timeout=30, what="the leftovers to die")

    def answers() -> bool:
        return predict(stack.gateway_url, f"churn-v2-{NS}.example.com", 1) == {200: 1}

    wait_for(lambda: ready(api, "churn-v2") and answers(), timeout=READY_TIMEOUT, what="churn-v2 back")


def test_deleting_an_inference_service_stops_its_pods_through_the_garbage_collector(
    stack: DevStack, api: client.ApiClient
) -> None:
    wait_for(lambda: ready(api, "churn-v2"), timeout=READY_TIMEOUT, what="churn-v2 Ready")
    address = address_of(stack, api, "churn-v2")
    client.CustomObjectsApi(api).delete_namespaced_custom_object(*ISVC[:2], NS, ISVC[2], "churn-v2")
    wait_for(lambda: not pods(api, "churn-v2"), timeout=120, what="KServe's Deployment and its pod to go")
    with pytest.raises(OSError):
        served(address)


def test_a_pod_waits_for_its_secret_and_runs_with_its_values(
    stack: DevStack, api: client.ApiClient, models: dict[str, Path]
) -> None:
    """The operator's credentials reach a predictor as envFrom a Secret (and a key may come as
    valueFrom): the kubelet resolves both, and starts nothing until the Secret exists."""
    obj = isvc("secretive", models["1"], "1")
    (container,) = obj["spec"]["predictor"]["containers"]
    container["envFrom"] = [{"secretRef": {"name": "model-store"}}]
    container["env"].append({"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "model-store", "key": "token"}}})
    apply(stack, obj)
    pod = wait_for(lambda: next(iter(pods(api, "secretive")), None), timeout=120, what="KServe's pod")
    core = client.CoreV1Api(api)
    wait_for(lambda: core.read_namespaced_pod(pod.metadata.name, NS).spec.node_name, what="the pod scheduled")
    with pytest.raises(AssertionError, match="timed out"):  # no Secret, no process
        wait_for(lambda: core.read_namespaced_pod(pod.metadata.name, NS).status.container_statuses, timeout=3)
    secret = {"metadata": {"name": "model-store"}, "stringData": {"AWS_ACCESS_KEY_ID": "key-1", "token": "t-2"}}
    core.create_namespaced_secret(NS, secret)

    def started() -> int | None:
        statuses = core.read_namespaced_pod(pod.metadata.name, NS).status.container_statuses or []
        return int(statuses[0].container_id.removeprefix("devstack://")) if statuses else None

    environ = psutil.Process(wait_for(started, timeout=60, what="the process started")).environ()
    assert (environ["AWS_ACCESS_KEY_ID"], environ["TOKEN"], environ["SLIPWAY_MODEL_VERSION"]) == ("key-1", "t-2", "1")
    client.CustomObjectsApi(api).delete_namespaced_custom_object(*ISVC[:2], NS, ISVC[2], "secretive")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
