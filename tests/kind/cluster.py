"""The kind cluster of hack/kind-up.sh as the kind tests see it: what must be there, kubectl, the
API, the Gateway on localhost:8080, Prometheus, and the manifests the scenarios apply.

Everything goes through a kubeconfig of the cluster's own (`kind get kubeconfig`), so the tests
never touch another cluster, whatever the user's current context is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from tests.support import wait_for

CLUSTER = os.environ.get("KIND_CLUSTER_NAME", "slipway")
CONTEXT = f"kind-{CLUSTER}"
GROUP, VERSION = "slipway.dev", "v1alpha1"
GATEWAY = ("gateway.networking.k8s.io", "v1")
GATEWAY_URL = "http://localhost:8080"  # kind-config.yaml maps the Gateway's NodePort here
DOMAIN = "example.com"  # the chart's traffic.domain, as hack/kind-up.sh sets it
PROMETHEUS_URL = "http://prometheus.monitoring:9090"
PROMETHEUS_PROXY = "/api/v1/namespaces/monitoring/services/http:prometheus:9090/proxy"
# The directory every node shares (kind-config.yaml) and the Feast data kind-up.sh made in it.
DATA = "/slipway-data"
LABELS = f"file://{DATA}/feast/labels.parquet"
SHARED_DATA_LABEL = "slipway.dev/shared-data"  # the admission policy mounts DATA into such pods
TEST_LABEL = "slipway.dev/kind-test"  # on every namespace the tests make
# The images kind-up.sh built and loaded (same defaults and variables).
_REGISTRY = os.environ.get("SLIPWAY_IMAGE_REGISTRY", "ghcr.io/example")
_TAG = os.environ.get("SLIPWAY_IMAGE_TAG", "0.1.0")
TRAINER_IMAGE = f"{_REGISTRY}/slipway-trainer:{_TAG}"
PREDICTOR_IMAGE = f"{_REGISTRY}/slipway-predictor:{_TAG}"


def why_not_runnable() -> str | None:
    """Why the kind tests cannot run here (every missing piece), or None when they can."""
    missing = [f"{tool} is not on PATH" for tool in ("docker", "kind", "kubectl") if shutil.which(tool) is None]
    if shutil.which("docker") is not None:
        try:
            docker = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode
        except (OSError, subprocess.TimeoutExpired):
            docker = 1
        if docker != 0:
            missing.append("`docker info` fails (no Docker daemon reachable)")
    if missing:
        return "kind tests need Docker, kind and kubectl: " + "; ".join(missing)
    try:
        clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`kind get clusters` did not answer: {error}"
    if CLUSTER not in clusters.stdout.split():
        return f"no kind cluster named {CLUSTER!r}: run hack/kind-up.sh first"
    return None


@dataclass(frozen=True)
class Trained:
    """A TrainingRun that finished, and the ModelVersion it registered."""

    namespace: str
    run: dict[str, Any]
    version: dict[str, Any]


class Kind:
    """kubectl, the API and the cluster's endpoints, all through the cluster's own kubeconfig."""

    def __init__(self, workdir: Path) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        exported = subprocess.run(
            ["kind", "get", "kubeconfig", "--name", CLUSTER], capture_output=True, text=True, timeout=60, check=True
        )
        self.kubeconfig.write_text(exported.stdout)
        self.kubeconfig.chmod(0o600)
        api_client = config.new_client_from_config(str(self.kubeconfig))  # type: ignore[no-untyped-call]
        # Any: the client's generated types do not know custom objects' shapes.
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.core: Any = client.CoreV1Api(api_client)

    # -- kubectl, as a user runs it ----------------------------------------------------------------

    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        result = self.run(*args, stdin=stdin, timeout=timeout)
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stderr}"
        return result.stdout

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))

    def slipway(self, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`kubectl slipway -n NAMESPACE ...`: the plugin from this environment, on this cluster."""
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        return subprocess.run(
            ["kubectl", "slipway", "-n", namespace, *args], env=env, capture_output=True, text=True, timeout=60
        )

    # -- what hack/kind-up.sh installs -----------------------------------------------------------

    def problems(self) -> list[str]:
        """What kind-up.sh should have installed and is not there (or not ready)."""
        checks = {
            "Slipway's CRDs": ("get", "crd", "trainingruns.slipway.dev", "modelversions.slipway.dev"),
            "the operator": (
                "wait",
                "--for=condition=Available",
                "deployment/slipway",
                "-n",
                "slipway-system",
                "--timeout=60s",
            ),
            "the Gateway": (
                "wait",
                "--for=condition=Programmed",
                "gateway/slipway-gateway",
                "-n",
                "slipway-system",
                "--timeout=60s",
            ),
            "KServe": ("get", "crd", "inferenceservices.serving.kserve.io"),
            "KubeRay": ("get", "crd", "rayjobs.ray.io"),
            "Prometheus": ("get", "service", "prometheus", "-n", "monitoring"),
            "the predictors' PodMonitor": ("get", "podmonitor", "slipway-predictors", "-n", "monitoring"),
            "the shared-data admission policy": ("get", "mutatingadmissionpolicy", "slipway-shared-data"),
            "Redis": ("wait", "--for=condition=Available", "deployment/redis", "-n", "feast", "--timeout=60s"),
            "the Feast data (job feast/feast-setup)": (
                "wait",
                "--for=condition=Complete",
                "job/feast-setup",
                "-n",
                "feast",
                "--timeout=10s",
            ),
        }
        found = []
        for what, args in checks.items():
            result = self.run(*args, timeout=120)
            if result.returncode != 0:
                found.append(f"{what}: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else '?'}")
        return found

    # -- the API ---------------------------------------------------------------------------------

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name, "labels": {TEST_LABEL: "true"}}})

    def delete_namespace(self, name: str) -> None:
        self.run("delete", "namespace", name, "--wait=false", "--ignore-not-found")

    def get(self, namespace: str, plural: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        return found

    def items(self, namespace: str, plural: str, group: str = GROUP, version: str = VERSION) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(group, version, namespace, plural)[
            "items"
        ]
        return listed

    def model_version(self, namespace: str, number: int) -> dict[str, Any] | None:
        return next((v for v in self.items(namespace, "modelversions") if v["spec"]["version"] == number), None)

    def md_status(self, namespace: str, name: str = "churn") -> dict[str, Any]:
        status: dict[str, Any] = self.get(namespace, "modeldeployments", name).get("status") or {}
        return status

    def weights(self, namespace: str, name: str = "churn") -> dict[str, int]:
        """The HTTPRoute's backend Service -> weight, as its spec says."""
        route = self.custom.get_namespaced_custom_object(*GATEWAY, namespace, "httproutes", name)
        return {ref["name"]: ref.get("weight", 1) for ref in route["spec"]["rules"][0]["backendRefs"]}

    def run_job(self, namespace: str, name: str, image: str, command: list[str], timeout: float = 600) -> None:
        """A Job in `namespace` with the shared directory mounted; returns once it succeeded."""
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": {SHARED_DATA_LABEL: "true"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "job", "image": image, "imagePullPolicy": "IfNotPresent", "command": command}
                        ],
                    },
                },
            },
        }
        self.apply(job)

        def finished() -> str | None:
            status = json.loads(self.kubectl("get", "job", name, "-n", namespace, "-o", "json")).get("status", {})
            if status.get("failed"):
                logs = self.run("logs", f"job/{name}", "-n", namespace, "--tail=40").stdout
                raise AssertionError(f"job {namespace}/{name} failed:\n{logs}")
            return "done" if status.get("succeeded") else None

        wait_for(finished, timeout=timeout, interval=2, what=f"job {namespace}/{name}")

    # -- Prometheus, through the API server's service proxy ------------------------------------------

    def prometheus(self, query: str) -> list[dict[str, Any]]:
        path = f"{PROMETHEUS_PROXY}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        result: list[dict[str, Any]] = json.loads(self.kubectl("get", "--raw", path))["data"]["result"]
        return result

    def scalar(self, query: str) -> float:
        """The single value of a `sum(...)` query; 0 when there is no series (yet)."""
        result = self.prometheus(query)
        return float(result[0]["value"][1]) if result else 0.0

    def served(self, namespace: str, version: int) -> float:
        """Requests version `version` of `namespace`'s churn has answered, as Prometheus saw them."""
        return self.scalar(f'sum(slipway_requests_total{{namespace="{namespace}",revision="{version}"}})')


# -- the Gateway on localhost:8080 -----------------------------------------------------------------


def host(namespace: str, deployment: str = "churn") -> str:
    return f"{deployment}.{namespace}.{DOMAIN}"


def predict(namespace: str, instances: list[dict[str, Any]], timeout: float = 10) -> list[float]:
    """v1 predictions of `namespace`'s churn through the Gateway; raises on anything but 200."""
    request = urllib.request.Request(
        f"{GATEWAY_URL}/v1/models/churn:predict",
        json.dumps({"instances": instances}).encode(),
        {"Host": host(namespace), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        predictions: list[float] = json.loads(response.read())["predictions"]
    return predictions


def answers(namespace: str, timeout: float = 240) -> list[float]:
    """Waits until the Gateway routes to `namespace`'s churn (Envoy programs a new route in seconds)."""
    last: list[str] = []

    def probe() -> list[float] | None:
        try:
            return predict(namespace, [{"customer_id": 1001}, {"customer_id": 1002}])
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last[:] = [str(error)]
            return None

    try:
        return wait_for(probe, timeout=timeout, interval=1, what=f"the Gateway to answer for {host(namespace)}")
    except AssertionError as error:
        raise AssertionError(f"{error}; last error: {last}") from None


# -- manifests -----------------------------------------------------------------------------------


def training_run(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A TrainingRun on the Feast data kind-up.sh generated, sized for a laptop."""
    body: dict[str, Any] = {
        "model": "churn",
        "image": TRAINER_IMAGE,
        "entrypoint": "pipelines.churn.train",
        "features": {"featureService": "churn_v1", "entities": {"uri": LABELS}, "label": "churned"},
        "hyperparameters": {"epochs": "5", "batchSize": "256", "learningRate": "0.01"},
        "scaling": {"workers": 2, "gpusPerWorker": 0, "cpusPerWorker": 1, "memoryPerWorker": "2Gi"},
        "artifacts": {"uri": f"file://{DATA}/models/{namespace}/"},
        "evaluation": {"metric": "auc", "minimum": 0.7, "mustBeatServing": False},
        "backoffLimit": 1,
        "activeDeadlineSeconds": 1800,
        **spec,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def model_version(namespace: str, number: int, uri: str, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ModelVersion registered by hand: `uri`, with the metrics and lineage of `source` if given."""
    spec: dict[str, Any] = {"model": "churn", "version": number, "uri": uri, "format": "torchscript"}
    if source is not None:
        spec["format"] = source["spec"].get("format", "torchscript")
        for key in ("metrics", "lineage"):
            if source["spec"].get(key):
                spec[key] = source["spec"][key]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelVersion",
        "metadata": {"name": f"churn-v{number}", "namespace": namespace},
        "spec": spec,
    }


def model_deployment(namespace: str, strategy: dict[str, Any]) -> dict[str, Any]:
    """`churn` serving `version: latest` with online features from Redis, behind the Gateway."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn", "namespace": namespace},
        "spec": {
            "model": "churn",
            "version": "latest",
            "predictor": {
                "image": PREDICTOR_IMAGE,
                "minReplicas": 1,
                "maxReplicas": 1,
                "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
                "features": {"featureService": "churn_v1", "entityKey": "customer_id"},
            },
            "traffic": "gateway",
            "prometheus": {"url": PROMETHEUS_URL},
            "strategy": strategy,
        },
    }


def local_path(uri: str) -> str:
    """The path in the shared directory of a file:// artifact URI (the same in every pod)."""
    assert uri.startswith(f"file://{DATA}/"), uri
    return uri.removeprefix("file://").rstrip("/")
