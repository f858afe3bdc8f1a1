"""Rollout detection: how fast a bad canary is rolled back, and whether healthy ones ever are.

In the dev stack (kube-apiserver, the operator, model servers of our predictor behind nginx, a
real Prometheus scraping them every second) with the project's load generator sending steady
traffic through the gateway:
  detection  a candidate that fails a share of requests (`pipelines.predictor.faults
             --error-rate`) rolls out as a canary; the time from its first weight taking effect
             (the Gateway accepting a route that gives it traffic) to all traffic back on stable
             (the Gateway accepting a route that gives it 0%) is taken, `--faulty` times.
             Target (issue 4): <= interval x (failureLimit + 1) + one scrape interval + 2 s.
  healthy    `--healthy` rollouts of healthy copies of the stable model; every one must be
             promoted (target: 0 false rollbacks in 20).
Times are wall-clock on this machine, polled every 50 ms from the API server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client, config  # noqa: E402
from pipelines.churn import model as churn  # noqa: E402
from pipelines.predictor import artifact, faults  # noqa: E402

from slipway.api.artifacts import Manifest  # noqa: E402
from slipway.devstack.stack import NAMESPACE, DevStack  # noqa: E402
from slipway.devstack.traffic import LoadGenerator  # noqa: E402

GROUP, VERSION = "slipway.dev", "v1alpha1"
ROUTES = ("gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes")
FEATURES = [f"x{i}" for i in range(8)]
INTERVAL_S, FAILURE_LIMIT, SCRAPE_S = 2, 1, 1
TARGET_S = INTERVAL_S * (FAILURE_LIMIT + 1) + SCRAPE_S + 2
STRATEGY = {
    "type": "Canary",
    "progressDeadline": "120s",
    "canary": {
        "steps": [{"weight": 50, "pause": "0s"}],
        "analysis": {
            "interval": f"{INTERVAL_S}s",
            "failureLimit": FAILURE_LIMIT,
            "metrics": [{"name": "error-rate", "max": 0.05}],
        },
    },
}


def make_model(out: Path) -> Path:
    torch.manual_seed(1)
    net = churn.ChurnMLP(len(FEATURES), hidden=(16, 8)).eval()
    artifact.write(str(out), churn.torchscript_bytes(net), Manifest(metrics={"auc": 0.8}, features=FEATURES))
    return out


class Bench:
    def __init__(self, stack: DevStack) -> None:
        self.stack = stack
        self.api = client.CustomObjectsApi(config.new_client_from_config(str(stack.kubeconfig)))
        self.next_version = 1
        self.breakdown: list[dict[str, Any]] = []  # per faulty canary: to the decision, then to 0% in effect
        self.healthy = make_model(stack.artifacts / "runs" / "healthy")

    def register(self, run_dir: Path) -> int:
        number, self.next_version = self.next_version, self.next_version + 1
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelVersion",
            "metadata": {"name": f"churn-v{number}", "namespace": NAMESPACE},
            "spec": {"model": "churn", "version": number, "uri": f"file://{run_dir}/", "format": "torchscript"},
        }
        self.api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modelversions", body)
        return number

    def status(self) -> dict[str, Any]:
        md = self.api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", "churn")
        return md.get("status") or {}

    def weight_in_effect(self, version: int) -> int | None:
        """The candidate's weight once a Gateway accepted the route's current generation, else None."""
        route = self.api.get_namespaced_custom_object(*ROUTES, "churn")
        parents = (route.get("status") or {}).get("parents", [])
        accepted = any(
            c["type"] == "Accepted"
            and c["status"] == "True"
            and c["observedGeneration"] >= route["metadata"]["generation"]
            for p in parents
            for c in p["conditions"]
        )
        if not accepted:
            return None
        refs = route["spec"]["rules"][0]["backendRefs"]
        return next((r["weight"] for r in refs if r["name"] == f"churn-v{version}-predictor"), 0)

    def wait(self, probe: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (value := probe()) is not None:
                return value
            if (problem := self.stack.dead()) is not None:
                raise RuntimeError(problem)
            time.sleep(0.05)
        raise TimeoutError(f"{what} within {timeout}s; status: {self.status()}")

    def deploy(self) -> None:
        self.register(self.healthy)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": "churn", "namespace": NAMESPACE},
            "spec": {
                "model": "churn",
                "predictor": {"image": "local-dev"},
                "prometheus": {"url": self.stack.prometheus_url},
                "strategy": STRATEGY,
            },
        }
        self.api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", body)
        self.wait(lambda: True if self.status().get("phase") == "Stable" else None, 120, "version 1 stable")

    def detection(self, index: int) -> float:
        bad = faults.make_faulty(
            str(self.healthy), str(self.stack.artifacts / "runs" / f"faulty-{index}"), error_rate=0.5
        )
        version = self.register(Path(bad))
        started = self.wait(
            lambda: time.time() if (self.weight_in_effect(version) or 0) > 0 else None,
            120,
            f"version {version} taking traffic",
        )
        decided = self.wait(
            lambda: time.time() if self.status().get("rolledBackVersion") == version else None,
            120,
            f"version {version} rolled back",
        )
        status = self.status()
        ended = self.wait(
            lambda: time.time() if self.weight_in_effect(version) == 0 else None, 120, f"version {version} at 0%"
        )
        assert status["phase"] in ("Degraded", "RollingBack") and status["rolledBackVersion"] == version, status
        self.breakdown.append(
            {
                "decided_s": round(decided - started, 2),
                "applied_s": round(ended - decided, 2),
                "inconclusive": status.get("analysisInconclusive", 0),
                "failures": status.get("analysisFailures", 0),
            }
        )
        return ended - started

    def healthy_rollout(self) -> bool:
        version = self.register(self.healthy)

        def finished() -> bool | None:
            status = self.status()
            if status.get("stableVersion") == version:
                return True
            if status.get("rolledBackVersion") == version:
                return False
            return None

        return bool(self.wait(finished, 180, f"version {version} promoted or rolled back"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faulty", type=int, default=5, help="faulty canaries to time")
    parser.add_argument("--healthy", type=int, default=20, help="healthy rollouts that must all promote")
    parser.add_argument("--rate", type=float, default=30, help="requests per second through the gateway")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(256, len(FEATURES))).round(3).tolist()
    instances = [dict(zip(FEATURES, row, strict=True)) for row in rows]
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp, DevStack(Path(tmp), with_training=False) as stack:
        bench = Bench(stack)
        bench.deploy()
        host = f"churn.{NAMESPACE}.example.com"
        with LoadGenerator(stack.gateway_url, host, "churn", instances, rate=args.rate) as load:
            times = []
            for index in range(args.faulty):
                times.append(bench.detection(index))
                print(
                    f"detection {index + 1}/{args.faulty}: {times[-1]:.2f} s (target {TARGET_S} s)",
                    bench.breakdown[-1],
                    flush=True,
                )
            outcomes = []
            for index in range(args.healthy):
                outcomes.append(bench.healthy_rollout())
                print(f"healthy rollout {index + 1}/{args.healthy}: {'promoted' if outcomes[-1] else 'ROLLED BACK'}")
            traffic = dict(load.snapshot())
            breakdown = bench.breakdown
    figures = {
        "interval_s": INTERVAL_S,
        "failure_limit": FAILURE_LIMIT,
        "scrape_interval_s": SCRAPE_S,
        "target_s": TARGET_S,
        "detection_s": [round(t, 2) for t in times],
        "detection_median_s": round(statistics.median(times), 2) if times else None,
        "detection_max_s": round(max(times), 2) if times else None,
        "detection_met": bool(times) and max(times) <= TARGET_S,
        "detection_breakdown": breakdown,
        "healthy_rollouts": len(outcomes),
        "false_rollbacks": outcomes.count(False),
        "false_rollbacks_met": outcomes.count(False) == 0,
        "requests_by_status": traffic,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
