"""The dev stack: control plane, CRDs, operator, a local Ray with the RayJob executor, Feast data,
and serving: the real KServe controller manager, kube-controller-manager and kube-scheduler, the
pods they make run as local processes behind a real nginx (the node and Gateway stand-in), and a
real Prometheus.

`slipway dev up` runs it in the foreground; the e2e tests run the same `DevStack`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

import psutil
import yaml

from ..controlplane import ControlPlane
from ..controlplane.assets import REPO_ROOT
from ..controlplane.components import Component, serving_components, start_all, stop_all
from ..controlplane.controllers import kserve_manager
from ..controlplane.server import free_port
from .cluster import OperatorProcess, install_crds, kubectl
from .prometheus import LocalPrometheus
from .ray_local import LocalRay
from .serving import GATEWAY_URL_FILE

PID_FILE = "dev.pid"
NAMESPACE = "ml"
DEMO_CUSTOMERS = 2000
DATA_START, DATA_DAYS = datetime(2025, 1, 1, tzinfo=UTC), 180  # the generated data's time range
DOMAIN = "example.com"
# What `version: latest` rolls out with in the dev stack: short steps, analysed every 10 s.
DEMO_CANARY: dict[str, object] = {
    "type": "Canary",
    "canary": {
        "steps": [{"weight": 10, "pause": "20s"}, {"weight": 50, "pause": "20s"}],
        "analysis": {
            "interval": "10s",
            "failureLimit": 1,
            "metrics": [
                {"name": "error-rate", "max": 0.05},
                {"name": "latency-p95", "max": 0.5},
                {"name": "prediction-mean-shift", "max": 0.15},
            ],
        },
    },
}
GATEWAY = "slipway-system/slipway-gateway"


class DevStack:
    def __init__(
        self,
        workdir: Path,
        with_training: bool = True,
        with_serving: bool = True,
        serving_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir.resolve()
        # Added to every model server's environment (e.g. a shorter input-monitor window for a test).
        self.serving_env = dict(serving_env or {})
        self.with_training = with_training
        self.with_serving = with_serving
        self.plane = ControlPlane(self.workdir / "controlplane")
        # Where the operator attaches HTTPRoutes and which domain InferenceService URLs carry: the
        # serving executor's gateway answers exactly these.
        routing = {"SLIPWAY_INGRESS_DOMAIN": DOMAIN, "SLIPWAY_GATEWAY": GATEWAY}
        self.operator = OperatorProcess(self.plane.kubeconfig, self.workdir / "operator.log", env=routing)
        self.ray = LocalRay(self.workdir / "ray.log")
        self.executor: Component | None = None  # the RayJob executor
        self.prometheus = LocalPrometheus(self.workdir)
        self.serving_executor: Component | None = None
        self.components: list[Component] = []  # KServe and the Kubernetes controllers
        self.gateway_port = 0  # chosen when the gateway starts, kept across restarts of the executor
        self.feast_data = self.workdir / "feast"
        self.artifacts = self.workdir / "artifacts"

    def __enter__(self) -> DevStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    @property
    def gateway_url(self) -> str:
        """The gateway (nginx): send requests with `Host: <name>.<namespace>.example.com`."""
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.with_serving:
            kserve_manager()  # built once into ~/.cache/slipway (minutes), before any server idles
        self.plane.start()
        install_crds(self.plane.assets.kubectl, self.plane.kubeconfig, self.workdir)
        kubectl(self.plane.assets.kubectl, self.plane.kubeconfig, "create", "namespace", NAMESPACE, check=False)
        if self.with_serving:
            self._start_controllers()
        self.operator.start()
        if self.with_training:
            self.prepare_features(self.feast_data)
            self.ray.start()
            self._start_executor()
            self.write_demo_run()
        if self.with_serving:
            self.prometheus.start()
            self._start_serving()
            self.write_demo_deployment()

    def prepare_features(self, data: Path, *extra: str) -> None:
        """Generates the churn data set, registers the Feast repository and fills the online store.

        Only the data's last 60 days are materialized: every customer has activity (weekly) and
        billing (monthly) rows in them, and the online store keeps only the latest row anyway.
        """
        env = {**os.environ, "SLIPWAY_FEAST_DATA": str(data)}
        # The data's range is set here (not imported from feature_repo, which the `slipway` console
        # script cannot import), so the materialized window is known; `extra` may override it.
        generate = [sys.executable, "-m", "feature_repo.generate", "--out", str(data)]
        generate += ["--start", DATA_START.date().isoformat(), "--days", str(DATA_DAYS)]
        subprocess.run(
            [*generate, "--customers", str(DEMO_CUSTOMERS), "--seed", "7", *extra], cwd=REPO_ROOT, env=env, check=True
        )
        subprocess.run([sys.executable, "-m", "feature_repo.store", "apply"], cwd=REPO_ROOT, env=env, check=True)
        end = DATA_START + timedelta(days=DATA_DAYS + 1)
        window = ["--start", (end - timedelta(days=61)).isoformat(), "--end", end.isoformat(), "--window-days", "31"]
        materialize = [sys.executable, "-m", "feature_repo.store", "materialize", *window]
        subprocess.run(materialize, cwd=REPO_ROOT, env=env, check=True)

    def refresh_offline(self, values: Mapping[str, float], days: int = 14) -> tuple[datetime, datetime]:
        """The world moved: appends a fresh period of `days` to the offline sources, every customer
        with `values` set (e.g. the feature the drifted traffic shifted), and materializes it.

        A TrainingRun on the dev stack's labels then trains (and is evaluated) on the fresh rows
        too, and the online store serves the new values. Returns the period's [start, end).
        """
        env = {**os.environ, "SLIPWAY_FEAST_DATA": str(self.feast_data)}
        append = [sys.executable, "-m", "feature_repo.generate", "--out", str(self.feast_data)]
        append += ["--append-days", str(days), "--seed", "7"]
        append += [arg for name, value in sorted(values.items()) for arg in ("--set", f"{name}={value}")]
        done = subprocess.run(append, cwd=REPO_ROOT, env=env, check=True, capture_output=True, text=True)
        period = json.loads(done.stdout)
        start, end = datetime.fromisoformat(period["start"]), datetime.fromisoformat(period["end"])
        window = ["--start", start.isoformat(), "--end", (end + timedelta(days=1)).isoformat(), "--window-days", "31"]
        materialize = [sys.executable, "-m", "feature_repo.store", "materialize", *window]
        subprocess.run(materialize, cwd=REPO_ROOT, env=env, check=True)
        return start, end

    def job_env(self) -> dict[str, str]:
        """What every training job sees, as the trainer image provides it in a cluster."""
        return {
            # `python` in the entrypoint is this environment's, as it is the image's in a cluster.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO_ROOT),
            "SLIPWAY_FEATURE_REPO": str(REPO_ROOT / "feature_repo"),
            "SLIPWAY_FEAST_DATA": str(self.feast_data),
            "SLIPWAY_IMAGE": "local-dev",
        }

    def _start_executor(self) -> None:
        args = [sys.executable, "-m", "slipway.devstack.rayjobs", f"--kubeconfig={self.kubeconfig}"]
        args += [f"--ray-address={self.ray.address}", *(f"--env={k}={v}" for k, v in self.job_env().items())]
        self.executor = Component("executor", args, env={**os.environ, **self.ray.env})
        start_all([self.executor], None, self.workdir)

    def _start_controllers(self) -> None:
        """KServe (its webhooks too, so before the operator writes an InferenceService), and the
        controllers and scheduler that turn its Deployments into pods on the dev stack's node."""
        self.components, objects = serving_components(self.kubeconfig, self.workdir, GATEWAY)
        manifest = self.workdir / "kserve-setup.yaml"
        manifest.write_text(yaml.safe_dump_all(objects))
        kubectl(self.plane.assets.kubectl, self.kubeconfig, "apply", "--server-side", "-f", str(manifest))
        start_all(self.components, self.kubeconfig, self.workdir)

    def _start_serving(self, timeout: float = 120) -> None:
        """The node and Gateway stand-in; ready once its nginx answers (it writes the gateway URL then;
        the first run downloads nginx and Prometheus)."""
        url_file = self.workdir / GATEWAY_URL_FILE
        url_file.unlink(missing_ok=True)
        self.gateway_port = self.gateway_port or free_port()
        args = [sys.executable, "-m", "slipway.devstack.serving", f"--kubeconfig={self.kubeconfig}"]
        args += [f"--workdir={self.workdir}", f"--gateway={GATEWAY}"]
        env = self.job_env() | self.serving_env
        args += [f"--gateway-port={self.gateway_port}", *(f"--env={k}={v}" for k, v in env.items())]
        self.serving_executor = Component("serving", args, url_file.exists, dict(os.environ))
        start_all([self.serving_executor], None, self.workdir, timeout)

    @property
    def serving(self) -> subprocess.Popen[bytes] | None:
        return self.serving_executor.proc if self.serving_executor else None

    def training_run(self, name: str, labels: Path | None = None, **spec: object) -> dict[str, object]:
        """A TrainingRun for the dev stack's data, CPU-sized for one machine."""
        body: dict[str, object] = {
            "model": "churn",
            "image": "local-dev",
            "entrypoint": "pipelines.churn.train",
            "features": {
                "featureService": "churn_v1",
                "entities": {"uri": f"file://{labels or self.feast_data / 'labels.parquet'}"},
                "label": "churned",
            },
            "hyperparameters": {"epochs": "5", "batchSize": "256", "learningRate": "0.01"},
            "scaling": {"workers": 2, "gpusPerWorker": 0, "cpusPerWorker": 0.5, "memoryPerWorker": "1Gi"},
            "artifacts": {"uri": f"file://{self.artifacts}/"},
            "evaluation": {"metric": "auc", "minimum": 0.7, "mustBeatServing": True},
            "backoffLimit": 1,
            "activeDeadlineSeconds": 1800,
            **spec,
        }
        return {
            "apiVersion": "slipway.dev/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": body,
        }

    def write_demo_run(self) -> Path:
        path = self.workdir / "trainingrun.yaml"
        path.write_text(yaml.safe_dump(self.training_run("churn-demo"), sort_keys=False))
        return path

    def model_deployment(
        self, name: str = "churn", strategy: dict[str, object] | None = None, features: bool = True
    ) -> dict[str, object]:
        """A ModelDeployment for the dev stack: its Prometheus, its gateway, `version: latest`."""
        predictor: dict[str, object] = {"image": "local-dev"}  # the dev stack runs the predictor from the tree
        if features:
            predictor["features"] = {"featureService": "churn_v1", "entityKey": "customer_id"}
        return {
            "apiVersion": "slipway.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "model": "churn",
                "version": "latest",
                "predictor": predictor,
                "traffic": "gateway",
                "prometheus": {"url": self.prometheus_url},
                "strategy": strategy or DEMO_CANARY,
            },
        }

    def write_demo_deployment(self) -> Path:
        path = self.workdir / "modeldeployment.yaml"
        path.write_text(yaml.safe_dump(self.model_deployment(features=self.with_training), sort_keys=False))
        return path

    def stop(self) -> None:
        if self.serving_executor:
            self.serving_executor.stop(timeout=30)  # it stops its model servers and nginx
        stop_all(self.components)
        self.prometheus.stop()
        if self.executor:
            self.executor.stop()
        self.ray.stop()
        self.operator.stop()
        self.plane.stop()

    def dead(self) -> str | None:
        """The first component that exited, if any."""
        processes = (
            ("operator", self.operator.proc),
            ("executor", self.executor.proc if self.executor else None),
            ("serving", self.serving),
            ("prometheus", self.prometheus.proc),
            *((c.name, c.proc) for c in self.components),
        )
        for name, proc in processes:
            if proc is not None and proc.poll() is not None:
                return f"the {name} exited ({proc.returncode}); see {self.workdir}/{name}.log"
        return None


def up(workdir: Path) -> int:
    """Runs the dev stack in the foreground until Ctrl-C (or `slipway dev down`)."""
    workdir = workdir.resolve()
    if (workdir / PID_FILE).exists() and _alive(int((workdir / PID_FILE).read_text())):
        print("a dev stack is already running; stop it with `slipway dev down`")
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        "starting the dev stack (the first run builds the control plane and KServe: about 10 minutes) ...", flush=True
    )
    with DevStack(workdir) as stack:
        (workdir / PID_FILE).write_text(str(os.getpid()))
        try:
            print(
                "\nSlipway dev stack is up: kube-apiserver, the operator, Ray and the RayJob executor, Feast data,\n"
                "KServe, kube-controller-manager and kube-scheduler, their pods run as local model servers\n"
                "behind nginx (the node and Gateway stand-in), and Prometheus.\n"
                f"  export KUBECONFIG={stack.kubeconfig}\n"
                f"  export PATH={stack.plane.assets.kubectl.parent}:$PATH   # a kubectl of the API server's version\n"
                f"  kubectl apply -f {workdir / 'trainingrun.yaml'}        # trains for real on Feast features\n"
                f"  kubectl apply -f {workdir / 'modeldeployment.yaml'}    # serves each new version as a canary\n"
                "  kubectl get tr,mv,md,isvc,deploy,pods,httproute -n ml -w\n"
                "  kubectl slipway status churn -n ml --watch              # the rollout, live\n"
                "  kubectl apply -f tests/manifests/contract.yaml          # the API contract's manifests\n"
                f"Gateway: {stack.gateway_url}   (Host: <deployment>.<namespace>.{DOMAIN})\n"
                f"  curl -H 'Host: churn.{NAMESPACE}.{DOMAIN}' {stack.gateway_url}/v1/models/churn:predict \\\n"
                '       -d \'{"instances": [{"customer_id": 42}]}\'\n'
                f"Prometheus: {stack.prometheus_url}/graph?g0.expr=slipway_requests_total\n"
                f"Logs: {workdir}/{{operator,executor,serving,kserve,kube-*,prometheus,ray}}.log; "
                f"model servers: {workdir}/serving/\n"
                f"Ray dashboard: {stack.ray.address}   (token: {stack.ray.token_path})\n"
                "Ctrl-C (or `slipway dev down`) stops it all.",
                flush=True,
            )
            while not stop.wait(1):
                problem = stack.dead()
                if problem:
                    print(problem)
                    return 1
        finally:
            (workdir / PID_FILE).unlink(missing_ok=True)
    print("dev stack stopped")
    return 0


def down(workdir: Path, timeout: float = 90) -> int:
    path = workdir / PID_FILE
    if not path.exists():
        print("no dev stack is running")
        return 0
    pid = int(path.read_text())
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        print(f"dev stack (pid {pid}) did not stop within {timeout}s")
        return 1
    path.unlink(missing_ok=True)
    print("dev stack stopped")
    return 0


def _alive(pid: int) -> bool:
    return bool(psutil.pid_exists(pid))
