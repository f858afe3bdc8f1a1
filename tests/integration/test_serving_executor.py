"""The dev stack's KServe + Gateway stand-in: real model servers behind a real nginx, real Prometheus.

Runs `python -m slipway.devstack.serving` against the session's kube-apiserver, with a tiny
TorchScript model served by `pipelines.predictor`, and checks what KServe and a Gateway would
do: status, weighted splits through nginx (counted by each backend's own metrics), a Serverless
canary, a revision that fails, Prometheus scraping the servers, and a restart that adopts nothing.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from slipway.devstack.prometheus import TARGETS_FILE, LocalPrometheus
from tests.support import REPO, Cluster, wait_for, write_model_run

pytestmark = pytest.mark.integration

ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")
FEATURES = ["sessions_30d", "monthly_charges"]
SUFFIX = uuid.uuid4().hex[:5]
NS_GATEWAY, NS_CANARY, NS_FAILING = (f"srv-{kind}-{SUFFIX}" for kind in ("gateway", "canary", "failing"))
READY_TIMEOUT = 180  # a model server imports torch and KServe: seconds on two busy cores


@dataclass
class Serving:
    cluster: Cluster
    workdir: Path
    prometheus: LocalPrometheus
    proc: subprocess.Popen[bytes] | None = None
    _stale: int | None = None

    def start(self) -> None:
        url = self.workdir / "gateway-url"
        self._stale = url.stat().st_mtime_ns if url.exists() else None  # an earlier run's, kept for its port
        args = [sys.executable, "-m", "slipway.devstack.serving", f"--kubeconfig={self.cluster.kubeconfig}"]
        args += [f"--workdir={self.workdir}", f"--env=PYTHONPATH={REPO}", "--env=SLIPWAY_TORCH_THREADS=1"]
        args += [f"--namespace={ns}" for ns in (NS_GATEWAY, NS_CANARY, NS_FAILING)]
        log = open(self.workdir / "executor.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._up, timeout=60, what="the gateway URL")

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the executor exited: {(self.workdir / 'executor.log').read_text()[-3000:]}")
        url = self.workdir / "gateway-url"
        return url.exists() and url.stat().st_mtime_ns != self._stale

    @property
    def gateway(self) -> str:
        return (self.workdir / "gateway-url").read_text().strip()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)

    def targets(self) -> dict[str, str]:
        """Revision (pod label) -> address of every ready model server, from the Prometheus targets file."""
        doc = json.loads((self.workdir / TARGETS_FILE).read_text())
        return {group["labels"]["pod"]: group["targets"][0] for group in doc}

    def children(self) -> list[int]:
        doc = json.loads((self.workdir / "serving" / "pids.json").read_text())
        return [pid for pid, _ in doc["children"]]


@pytest.fixture(scope="module")
def serving(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    for ns in (NS_GATEWAY, NS_CANARY, NS_FAILING):
        cluster.core.create_namespace({"metadata": {"name": ns}})
    workdir = tmp_path_factory.mktemp("serving")
    prometheus = LocalPrometheus(workdir)
    prometheus.start()
    running = Serving(cluster, workdir, prometheus)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        prometheus.stop()
        if os.environ.get("SLIPWAY_SHOW_EXECUTOR_LOG"):
            print((workdir / "executor.log").read_text())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny trained-looking run directories (TorchScript + manifest), as training leaves them."""
    root = tmp_path_factory.mktemp("artifacts")
    return {
        version: write_model_run(root / "runs" / f"churn-{version}", seed=int(version), features=tuple(FEATURES))
        for version in ("1", "2")
    }


def isvc(name: str, run_dir: Path, version: str, mode: str = "Standard", canary: int | None = None) -> dict[str, Any]:
    predictor: dict[str, Any] = {
        "minReplicas": 1,
        "maxReplicas": 1,
        "containers": [
            {
                "name": "kserve-container",
                "image": "local-dev",
                "args": ["--model_name=churn", "--http_port=8080"],
                "env": [
                    {"name": "STORAGE_URI", "value": f"file://{run_dir}/"},
                    {"name": "SLIPWAY_MODEL", "value": "churn"},
                    {"name": "SLIPWAY_MODEL_VERSION", "value": version},
                ],
            }
        ],
    }
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": {"slipway.dev/model": "churn", "slipway.dev/version": version},
            "annotations": {"serving.kserve.io/deploymentMode": mode},
        },
        "spec": {"predictor": predictor},
    }


def httproute(name: str, weights: dict[str, int], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "slipway-gateway", "namespace": "slipway-system"}],
            "hostnames": [f"{name}.{namespace}.example.com"],
            "rules": [
                {"backendRefs": [{"name": f"{b}-predictor", "port": 80, "weight": w} for b, w in weights.items()]}
            ],
        },
    }


def get(cluster: Cluster, kind: tuple[str, str, str], namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.custom.get_namespaced_custom_object(kind[0], kind[1], namespace, kind[2], name)
    return obj


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    obj = get(cluster, ISVC, namespace, name)
    # As the operator judges it: Ready, with the newest revision the ready one (KServe's
    # observedGeneration is its Deployment's, not the InferenceService's).
    predictor = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
    done = predictor.get("latestCreatedRevision") == predictor.get("latestReadyRevision")
    return obj if done and conditions(obj).get("Ready", {}).get("status") == "True" else None


def route_in_effect(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The route once the gateway says its current generation's weights are in effect."""
    route = get(cluster, ROUTE, namespace, name)
    for parent in (route.get("status") or {}).get("parents", []):
        accepted = {c["type"]: c for c in parent["conditions"]}.get("Accepted", {})
        if accepted.get("status") == "True" and accepted.get("observedGeneration") == route["metadata"]["generation"]:
            return route
    return None


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
    url = address if address.startswith("http://") else f"http://{address}"
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "slipway_requests_total" and sample.labels.get("outcome") == "success":
                total += sample.value
    return total


def test_an_httproute_splits_traffic_by_weight_through_nginx(
    cluster: Cluster, serving: Serving, models: dict[str, Path]
) -> None:
    ns = NS_GATEWAY
    cluster.apply(ns, isvc("churn-v1", models["1"], "1"), isvc("churn-v2", models["2"], "2"))
    cluster.apply(ns, httproute("churn", {"churn-v1": 80, "churn-v2": 20}, ns))
    v1 = wait_for(lambda: ready(cluster, ns, "churn-v1"), timeout=READY_TIMEOUT, what="churn-v1 Ready")
    v2 = wait_for(lambda: ready(cluster, ns, "churn-v2"), timeout=READY_TIMEOUT, what="churn-v2 Ready")
    route = wait_for(lambda: route_in_effect(cluster, ns, "churn"), timeout=60, what="the route in effect")

    status = v1["status"]
    assert status["url"] == f"http://churn-v1-{ns}.example.com"  # KServe's default domainTemplate
    assert status["deploymentMode"] == "Standard"
    assert status["address"]["url"].startswith("http://127.0.0.1:")
    assert status["components"]["predictor"]["latestCreatedRevision"] == "churn-v1-predictor-00001"
    assert "traffic" not in status["components"]["predictor"]  # Standard: no Knative traffic
    assert {c: conditions(v1)[c]["status"] for c in ("PredictorReady", "IngressReady", "Ready")} == dict.fromkeys(
        ("PredictorReady", "IngressReady", "Ready"), "True"
    )
    (parent,) = route["status"]["parents"]
    assert parent["controllerName"] == "slipway.dev/devstack-gateway"
    # As we wrote it, with the defaults the real HTTPRoute schema fills in.
    assert parent["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "slipway-gateway",
        "namespace": "slipway-system",
    }
    assert {c["type"]: c["status"] for c in parent["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}

    host = f"churn.{ns}.example.com"
    before = {name: served(obj["status"]["address"]["url"]) for name, obj in (("v1", v1), ("v2", v2))}
    assert predict(serving.gateway, host, 200) == {200: 200}
    after = {name: served(obj["status"]["address"]["url"]) for name, obj in (("v1", v1), ("v2", v2))}
    counts = {name: after[name] - before[name] for name in after}
    assert counts["v1"] + counts["v2"] == 200
    assert 130 <= counts["v1"] <= 190, counts  # 160 expected; binomial sd about 5.7

    # Each InferenceService answers on its own host too, and an unknown host is a 404.
    assert predict(serving.gateway, f"churn-v2.{ns}.example.com", 3) == {200: 3}
    assert predict(serving.gateway, v1["status"]["url"].removeprefix("http://"), 3) == {200: 3}  # KServe's URL
    assert predict(serving.gateway, "nobody.example.com", 1) == {404: 1}

    # Weights 0/100: churn-v1 stays warm and gets nothing, once the route status says so.
    cluster.apply(ns, httproute("churn", {"churn-v1": 0, "churn-v2": 100}, ns))
    wait_for(lambda: route_in_effect(cluster, ns, "churn"), timeout=60, what="the new weights in effect")
    before = {name: served(obj["status"]["address"]["url"]) for name, obj in (("v1", v1), ("v2", v2))}
    assert predict(serving.gateway, host, 50) == {200: 50}
    assert served(v1["status"]["address"]["url"]) == before["v1"]
    assert served(v2["status"]["address"]["url"]) == before["v2"] + 50

    # A backend without an InferenceService: ResolvedRefs False, its share answers 500.
    cluster.apply(ns, httproute("churn", {"churn-v2": 50, "churn-v9": 50}, ns))
    route = wait_for(lambda: route_in_effect(cluster, ns, "churn"), timeout=60, what="the broken route in effect")
    resolved = {c["type"]: c for c in route["status"]["parents"][0]["conditions"]}["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    codes = predict(serving.gateway, host, 60)
    assert set(codes) == {200, 500} and codes[200] + codes[500] == 60

    # Prometheus scrapes every ready model server, labelled by namespace, isvc and pod.
    def scraped() -> list[dict[str, Any]] | None:
        found = serving.prometheus.query(f'up{{namespace="{ns}", isvc="churn-v1"}} == 1')
        return found or None

    (sample,) = wait_for(scraped, timeout=60, what="Prometheus to scrape churn-v1")
    assert sample["metric"]["pod"] == "churn-v1-predictor-00001"
    assert sample["metric"]["job"] == "slipway-predictors"

    # Detached from our Gateway: our entry leaves its status and its host answers 404.
    detached = httproute("churn", {"churn-v2": 100}, ns)
    detached["spec"]["parentRefs"] = [{"name": "another-gateway"}]
    cluster.apply(ns, detached)
    wait_for(lambda: not get(cluster, ROUTE, ns, "churn")["status"]["parents"], timeout=30, what="our entry to go")
    assert predict(serving.gateway, host, 1) == {404: 1}


def test_a_raw_deployment_rolls_out_a_new_revision_and_stops_the_old(
    cluster: Cluster, serving: Serving, models: dict[str, Path]
) -> None:
    ns = NS_GATEWAY
    first = wait_for(lambda: ready(cluster, ns, "churn-v1"), timeout=READY_TIMEOUT, what="churn-v1 Ready")
    old_address = first["status"]["address"]["url"]
    cluster.apply(ns, isvc("churn-v1", models["2"], "2"))  # a new template: a new revision

    def rolled_out() -> dict[str, Any] | None:
        # Revisions are numbered per pod template (the Deployment's generation), not per edit.
        obj = ready(cluster, ns, "churn-v1")
        predictor = (obj or {}).get("status", {}).get("components", {}).get("predictor", {})
        return obj if predictor.get("latestReadyRevision") == "churn-v1-predictor-00002" else None

    rolled = wait_for(rolled_out, timeout=READY_TIMEOUT, what="the new revision Ready")
    assert rolled["status"]["observedGeneration"] == 2
    assert rolled["status"]["address"]["url"] != old_address
    wait_for(lambda: "churn-v1-predictor-00001" not in serving.targets(), timeout=30, what="the old revision to stop")
    assert predict(serving.gateway, f"churn-v1.{ns}.example.com", 5) == {200: 5}


def test_a_serverless_canary_splits_by_canary_traffic_percent(
    cluster: Cluster, serving: Serving, models: dict[str, Path]
) -> None:
    ns = NS_CANARY
    cluster.apply(ns, isvc("churn", models["1"], "1", mode="Knative"))
    first = wait_for(lambda: ready(cluster, ns, "churn"), timeout=READY_TIMEOUT, what="churn Ready")
    predictor = first["status"]["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == "churn-predictor-00001"
    assert predictor["traffic"] == [
        {"revisionName": "churn-predictor-00001", "percent": 100, "latestRevision": True, "tag": "latest"}
    ]

    cluster.apply(ns, isvc("churn", models["2"], "2", mode="Knative", canary=30))

    def split() -> dict[str, Any] | None:
        obj = ready(cluster, ns, "churn")
        traffic = obj and obj["status"]["components"]["predictor"]["traffic"]
        return obj if traffic and len(traffic) == 2 and traffic[0]["revisionName"] == "churn-predictor-00002" else None

    canary = wait_for(split, timeout=READY_TIMEOUT, what="the canary split")
    predictor = canary["status"]["components"]["predictor"]
    assert predictor["traffic"] == [
        {"revisionName": "churn-predictor-00002", "percent": 30, "latestRevision": True, "tag": "latest"},
        {"revisionName": "churn-predictor-00001", "percent": 70, "latestRevision": False, "tag": "prev"},
    ]
    assert predictor["latestRolledoutRevision"] == "churn-predictor-00001"
    assert predictor["latestReadyRevision"] == "churn-predictor-00002"

    addresses = canary_targets(serving)
    before = {rev: served(addresses[rev]) for rev in ("churn-predictor-00001", "churn-predictor-00002")}
    assert predict(serving.gateway, f"churn.{ns}.example.com", 200) == {200: 200}
    counts = {rev: served(addresses[rev]) - before[rev] for rev in before}
    assert 35 <= counts["churn-predictor-00002"] <= 85, counts  # 60 expected; sd about 6.5

    # A canary step changes only canaryTrafficPercent: no new revision, the same processes.
    cluster.apply(ns, isvc("churn", models["2"], "2", mode="Knative", canary=60))

    def at_60() -> dict[str, Any] | None:
        obj = ready(cluster, ns, "churn")
        traffic = (obj or {}).get("status", {}).get("components", {}).get("predictor", {}).get("traffic") or []
        return obj if [t["percent"] for t in traffic] == [60, 40] else None

    step = wait_for(at_60, timeout=60, what="the 60% step")
    assert [t["percent"] for t in step["status"]["components"]["predictor"]["traffic"]] == [60, 40]
    assert step["status"]["components"]["predictor"]["latestCreatedRevision"] == "churn-predictor-00002"
    assert canary_targets(serving) == addresses

    # Promotion: no canaryTrafficPercent; the canary is rolled out and the old revision stops.
    cluster.apply(ns, isvc("churn", models["2"], "2", mode="Knative"))

    def promoted() -> dict[str, Any] | None:
        obj = ready(cluster, ns, "churn")
        predictor = obj["status"]["components"]["predictor"] if obj else {}
        return obj if predictor.get("latestRolledoutRevision") == "churn-predictor-00002" else None

    done = wait_for(promoted, timeout=60, what="the promotion")
    assert done["status"]["components"]["predictor"]["previousRolledoutRevision"] == "churn-predictor-00001"
    wait_for(lambda: list(canary_targets(serving)) == ["churn-predictor-00002"], timeout=30, what="the old one to stop")
    before_all = served(addresses["churn-predictor-00002"])
    assert predict(serving.gateway, f"churn.{ns}.example.com", 20) == {200: 20}
    assert served(addresses["churn-predictor-00002"]) == before_all + 20


def canary_targets(serving: Serving) -> dict[str, str]:
    return {pod: address for pod, address in serving.targets().items() if pod.startswith("churn-predictor-")}


def test_a_model_that_does_not_load_is_not_ready_with_its_log(
    cluster: Cluster, serving: Serving, tmp_path: Path
) -> None:
    ns = NS_FAILING
    cluster.apply(ns, isvc("broken", tmp_path / "nothing-here", "1"))

    def failed() -> dict[str, Any] | None:
        obj = get(cluster, ISVC, ns, "broken")
        cond = conditions(obj).get("Ready", {})
        return obj if cond.get("status") == "False" else None

    obj = wait_for(failed, timeout=READY_TIMEOUT, what="Ready=False")
    ready_cond = conditions(obj)["Ready"]
    assert ready_cond["reason"] == "RevisionFailed"
    assert "manifest.json" in ready_cond["message"]
    assert obj["status"]["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"
    assert "address" not in obj["status"]
    assert predict(serving.gateway, f"broken.{ns}.example.com", 1) == {503: 1}

    cluster.custom.delete_namespaced_custom_object(*ISVC[:2], ns, ISVC[2], "broken")
    wait_for(lambda: not (serving.workdir / "serving" / "revisions.json").read_text().count(f"{ns}/broken"), timeout=30)


def test_a_restarted_executor_kills_what_it_left_and_rebuilds(cluster: Cluster, serving: Serving) -> None:
    ns = NS_GATEWAY
    wait_for(lambda: ready(cluster, ns, "churn-v2"), timeout=READY_TIMEOUT, what="churn-v2 Ready")
    gateway = serving.gateway
    leftovers = serving.children()
    assert leftovers
    serving.stop(signal.SIGKILL)  # no cleanup, as when a node dies
    assert all(Path(f"/proc/{pid}").exists() for pid in leftovers)  # orphans, still running
    serving.start()
    assert serving.gateway == gateway  # the same port: clients keep their URL
    wait_for(lambda: not [pid for pid in leftovers if _running(pid)], timeout=10, what="the leftovers to die")

    def answers() -> bool:
        return predict(serving.gateway, f"churn-v2.{ns}.example.com", 1) == {200: 1}

    wait_for(lambda: ready(cluster, ns, "churn-v2") and answers(), timeout=READY_TIMEOUT, what="churn-v2 back")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_spec_without_containers_is_refused_in_status(cluster: Cluster, serving: Serving) -> None:
    ns = NS_FAILING
    bad = isvc("empty", Path("/nowhere"), "1")
    bad["spec"]["predictor"] = {"minReplicas": 1}
    cluster.apply(ns, bad)

    def refused() -> dict[str, Any] | None:
        cond = conditions(get(cluster, ISVC, ns, "empty")).get("Ready", {})
        return cond if cond.get("status") == "False" else None

    cond = wait_for(refused, timeout=30, what="Ready=False")
    assert cond["reason"] == "RevisionMissing" and "containers" in cond["message"]
