"""Test helpers: the cluster as tests see it, polling with a deadline, the contract manifests."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import itertools
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config

from slipway.controlplane import ControlPlane
from slipway.controlplane.helm import helm_binary
from slipway.controlplane.server import free_port
from slipway.devstack.cluster import OperatorProcess, install_crds
from tests import kserve_standin as kserve

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "tests" / "manifests" / "contract.yaml"
CHART = REPO / "helm" / "slipway"
RELEASE, RELEASE_NAMESPACE = "slipway", "slipway-system"
# Who the chart's ServiceAccount is to the API server (the RBAC subject of its ClusterRoleBinding).
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}"
# Pinned so rendering does not depend on which Kubernetes the helm binary was built for; the kind
# node image's version (kind-config.yaml).
KUBE_VERSION = "1.36.1"
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 30, interval: float = 0.1, what: str = "") -> T:
    """Polls real state until `probe` returns something truthy; fails with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe.__name__}; last: {last!r}")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=300, check=False)


@cache
def render_chart(*sets: str) -> tuple[dict[str, Any], ...]:
    """`helm template` of the chart as release `slipway` in slipway-system, with `--set`s."""
    args = ["template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    result = run_helm(*args)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def contract_manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(CONTRACT.read_text()) if doc]


class Cluster:
    """The control plane as tests see it: kubectl, a Python client, and the operator."""

    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.plane = plane
        self.workdir = workdir
        self.kubeconfig = plane.kubeconfig
        api_client = config.new_client_from_config(str(plane.kubeconfig))
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.operator: OperatorProcess | None = None
        self.liveness_url = ""
        self.metrics_url = ""
        self._log_index = itertools.count()

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.plane.assets.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def apply(self, namespace: str, *objs: dict[str, Any]) -> None:
        """`kubectl apply` of each object into `namespace`, as a user would."""
        for obj in objs:
            obj = copy.deepcopy(obj)
            obj["metadata"]["namespace"] = namespace
            result = self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(obj))
            assert result.returncode == 0, result.stderr

    def grant_operator_chart_rbac(self) -> None:
        """The chart's ClusterRole and binding, so the operator runs with exactly what it is given."""
        rbac = [doc for doc in render_chart() if doc["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
        result = self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(rbac))
        assert result.returncode == 0, result.stderr

    def start_operator(self, *namespaces: str, env: dict[str, str] | None = None) -> OperatorProcess:
        """`slipway operator` (watching `namespaces`, else cluster-wide), as the chart's ServiceAccount
        when the control plane knows that identity, else as admin."""
        log = self.workdir / f"operator-{next(self._log_index)}.log"
        self.liveness_url = f"http://127.0.0.1:{free_port()}/healthz"
        self.metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
        identity = OPERATOR_USER in self.plane.users
        self.operator = OperatorProcess(
            self.plane.kubeconfig_for(OPERATOR_USER) if identity else self.kubeconfig,
            log,
            env={"SLIPWAY_METRICS_PORT": self.metrics_url.split(":")[2].split("/")[0], **(env or {})},
            args=["--liveness", self.liveness_url, *(arg for ns in namespaces for arg in ("--namespace", ns))],
        )
        self.operator.start()
        return self.operator

    def operator_log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.workdir.glob("operator-*.log")))


@contextmanager
def audited_cluster(workdir: Path) -> Iterator[Cluster]:
    """A control plane of its own with an audit log, every CRD and the chart's RBAC for the operator,
    so the operator's requests can be counted; stops the operator the test started."""
    with ControlPlane(workdir / "plane", users=[OPERATOR_USER], audit=True) as plane:
        install_crds(plane.assets.kubectl, plane.kubeconfig, workdir)
        cluster = Cluster(plane, workdir)
        cluster.grant_operator_chart_rbac()
        yield cluster
        if cluster.operator:
            cluster.operator.stop()


def write_manifest(artifacts: Path, run: str, auc: float, passed_validation: bool = True) -> Path:
    """What the training pipeline leaves behind, written the way it writes it."""
    from slipway.api.artifacts import MANIFEST_FILE, VALIDATION_FILE, Manifest, ValidationReport
    from slipway.api.modelversion import Lineage

    folder = artifacts / "runs" / run
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        metrics={"auc": auc, "accuracy": 0.8, "logLoss": 0.4},
        features=["sessions_30d", "monthly_charges"],
        lineage=Lineage(feature_service="churn_v1", feature_views=["customer_activity", "customer_billing"]),
    )
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json(by_alias=True))
    report = ValidationReport(
        passed=passed_validation, reason="" if passed_validation else "missing fraction above 0.01: sessions_30d (0.20)"
    )
    (folder / VALIDATION_FILE).write_text(report.model_dump_json(by_alias=True))
    return folder


GATEWAY = ("gateway.networking.k8s.io", "v1")


def mark_ready(cluster: Cluster, namespace: str, isvc: dict[str, Any]) -> None:
    """What KServe writes once an InferenceService's predictor is up."""
    status = {
        "observedGeneration": isvc["metadata"]["generation"],
        "url": f"http://{isvc['metadata']['name']}-{namespace}.example.com",  # KServe's default domainTemplate
        "conditions": [{"type": t, "status": "True"} for t in ("IngressReady", "PredictorReady", "Ready")],
    }
    cluster.custom.patch_namespaced_custom_object_status(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", isvc["metadata"]["name"], {"status": status}
    )


def accept_route(cluster: Cluster, namespace: str, route: dict[str, Any]) -> None:
    """What a Gateway writes once an HTTPRoute's weights are in effect."""
    accepted = {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "",
        "observedGeneration": route["metadata"]["generation"],
        "lastTransitionTime": "2026-11-23T00:00:00Z",
    }
    resolved = {**accepted, "type": "ResolvedRefs", "reason": "ResolvedRefs"}
    parent = {
        "parentRef": route["spec"]["parentRefs"][0],
        "controllerName": "test/gateway",
        "conditions": [accepted, resolved],
    }
    cluster.custom.patch_namespaced_custom_object_status(
        *GATEWAY, namespace, "httproutes", route["metadata"]["name"], {"status": {"parents": [parent]}}
    )


def serve_first_version(cluster: Cluster, namespace: str) -> None:
    """Plays KServe and the Gateway for a deployment's first version until it is in effect."""
    isvc = wait_for(
        lambda: next(
            iter(cluster.custom.list_namespaced_custom_object(*INFERENCE, namespace, "inferenceservices")["items"]),
            None,
        ),
        what="the InferenceService",
    )
    mark_ready(cluster, namespace, isvc)
    route = wait_for(
        lambda: next(
            iter(cluster.custom.list_namespaced_custom_object(*GATEWAY, namespace, "httproutes")["items"]), None
        ),
        what="the HTTPRoute",
    )
    accept_route(cluster, namespace, route)


INFERENCE = ("serving.kserve.io", "v1beta1")


def rayjob_exists(cluster: Cluster, namespace: str, job: str) -> bool:
    items = cluster.custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs")["items"]
    return any(i["metadata"]["name"] == job for i in items)


def finish_job(cluster: Cluster, namespace: str, job: str, succeeded: bool, message: str = "") -> None:
    """What KubeRay writes when the Ray job ends, once the operator has created the RayJob (phase
    Pending is written first, when the run pins the serving version, so it does not imply the job)."""
    wait_for(lambda: rayjob_exists(cluster, namespace, job), what=f"RayJob {job}")
    body = {
        "jobStatus": "SUCCEEDED" if succeeded else "FAILED",
        "jobDeploymentStatus": "Complete" if succeeded else "Failed",
        "endTime": "2026-11-22T10:00:00Z",
        "message": message,
    }
    cluster.custom.patch_namespaced_custom_object_status("ray.io", "v1", namespace, "rayjobs", job, {"status": body})


class Controllers:
    """KServe and a Gateway, as far as status goes: a thread that answers like they do."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.broken: set[str] = set()  # InferenceServices that never become ready
        self.revisions: dict[str, tuple[str, kserve.Rollout]] = {}  # name -> (template, rollout)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                self._step()
            except Exception:  # an object deleted under us: look again next round
                continue

    def _isvc_status(self, isvc: dict[str, Any]) -> dict[str, Any]:
        """KServe's status, with its revision bookkeeping (the dev stack's pure model of KServe): a
        revision per pod template, ready at once unless broken; Knative traffic by
        canaryTrafficPercent; observedGeneration the Deployment's, not the InferenceService's."""
        name, predictor = isvc["metadata"]["name"], isvc["spec"]["predictor"]
        mode = kserve.deployment_mode(isvc)
        template = kserve.template_hash(predictor, mode)
        known, rollout = self.revisions.get(name, ("", kserve.Rollout()))
        if known != template:
            rollout = dataclasses.replace(rollout, created=kserve.next_revision(name, rollout))
        broken = name in self.broken
        if not broken:
            rollout = dataclasses.replace(rollout, ready=rollout.created)
        rollout, targets = kserve.settle(mode, kserve.canary_percent(isvc), rollout)
        self.revisions[name] = (template, rollout)
        state = kserve.RevisionState(kserve.STARTING if broken else kserve.READY)
        address = None if broken else f"http://{name}-predictor.{self.namespace}.svc.cluster.local"
        now = datetime.datetime(2026, 11, 23, tzinfo=datetime.UTC)
        return kserve.isvc_status(isvc, "example.com", rollout, targets, state, address, True, now)

    def _step(self) -> None:
        api, ns = self.cluster.custom, self.namespace
        for isvc in api.list_namespaced_custom_object(*INFERENCE, ns, "inferenceservices")["items"]:
            body = self._isvc_status(isvc)
            if body != isvc.get("status"):
                api.patch_namespaced_custom_object_status(
                    *INFERENCE, ns, "inferenceservices", isvc["metadata"]["name"], {"status": body}
                )
        for route in api.list_namespaced_custom_object(*GATEWAY, ns, "httproutes")["items"]:
            meta = route["metadata"]
            parents = (route.get("status") or {}).get("parents", [])
            if parents and parents[0]["conditions"][0]["observedGeneration"] == meta["generation"]:
                continue
            accepted = {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "",
                "observedGeneration": meta["generation"],
                "lastTransitionTime": "2026-11-23T00:00:00Z",
            }
            parent = {
                "parentRef": route["spec"]["parentRefs"][0],
                "controllerName": "test/gw",
                "conditions": [accepted, {**accepted, "type": "ResolvedRefs", "reason": "ResolvedRefs"}],
            }
            api.patch_namespaced_custom_object_status(
                *GATEWAY, ns, "httproutes", meta["name"], {"status": {"parents": [parent]}}
            )


def write_model_run(
    run_dir: Path, seed: int = 1, features: tuple[str, ...] = ("sessions_30d", "monthly_charges")
) -> Path:
    """A small trained-looking run directory (TorchScript + manifest), as training leaves one: for
    serving tests that need a model to serve but not a training run. The same seed, the same model."""
    import numpy as np
    import torch
    from pipelines.churn.model import ChurnMLP, torchscript_bytes
    from pipelines.predictor import artifact

    from slipway.api.artifacts import Manifest

    torch.manual_seed(seed)
    zeros, ones = np.zeros(len(features), "float32"), np.ones(len(features), "float32")
    net = ChurnMLP(len(features), hidden=(4,), mean=zeros, std=ones).eval()
    artifact.write(str(run_dir), torchscript_bytes(net), Manifest(metrics={"auc": 0.8}, features=list(features)))
    return run_dir


def write_standardized_run(run_dir: Path, feast_data: Path, seed: int = 7) -> Path:
    """A run directory like `write_model_run`'s, on every feature of the feature service in its order
    and standardized on the data's point-in-time features (so its answers spread over (0, 1)
    rather than saturate): for tests that compare one scoring path with another."""
    import torch
    from feature_repo.store import feature_names, historical_features, open_store
    from pipelines.churn.dataset import feature_matrix
    from pipelines.churn.model import ChurnMLP, standardization, torchscript_bytes
    from pipelines.predictor import artifact

    from slipway.api.artifacts import Manifest

    store = open_store(data_dir=str(feast_data))
    features = feature_names(store)
    mean, std = standardization(feature_matrix(historical_features(store, feast_data / "labels.parquet"), features))
    torch.manual_seed(seed)
    net = ChurnMLP(len(features), hidden=(16,), mean=mean, std=std).eval()
    artifact.write(str(run_dir), torchscript_bytes(net), Manifest(metrics={"auc": 0.8}, features=features))
    return run_dir
