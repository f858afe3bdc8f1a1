"""On kind: ModelDeployments serve trained versions through the Gateway on localhost:8080, with
real traffic, KServe predictors enriching requests from Redis (Feast's online store), and
rollouts judged by the cluster's Prometheus, which scrapes the predictor pods.

Each test starts from nothing in a namespace of its own: it registers the session's trained
versions (conftest.py) by hand, deploys version 1, then rolls out the next one and checks what
the cluster did: the HTTPRoute's weights, the ModelDeployment's status, `kubectl get md`, the
`kubectl slipway` plugin, and what Prometheus saw of each version.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from slipway.devstack.traffic import LoadGenerator
from tests.kind.cluster import (
    DATA,
    GATEWAY_URL,
    PREDICTOR_IMAGE,
    Kind,
    Trained,
    answers,
    host,
    local_path,
    model_deployment,
    model_version,
    predict,
)
from tests.support import wait_for

pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]  # includes training the session's versions
ROLLOUT_TIMEOUT = 600  # seconds: the new version's pod starts, then its steps and analyses
ANALYSIS = {
    "interval": "15s",  # the PodMonitor scrapes every 5 s: three samples per window
    "failureLimit": 1,
    "metrics": [
        {"name": "error-rate", "max": 0.05},
        {"name": "latency-p95", "max": 1.0},
        {"name": "prediction-mean-shift", "max": 0.15},
    ],
}
CANARY = {
    "type": "Canary",
    "progressDeadline": "300s",
    "canary": {"steps": [{"weight": 25, "pause": "10s"}, {"weight": 50, "pause": "10s"}], "analysis": ANALYSIS},
}
BLUE_GREEN = {
    "type": "BlueGreen",
    "progressDeadline": "300s",
    "blueGreen": {"previewWeight": 20, "autoPromote": True, "scaleDownDelay": "900s", "analysis": ANALYSIS},
}
CUSTOMERS = [{"customer_id": 1001 + i} for i in range(200)]  # all in the online store (1001..3000)


def until(kind: Kind, namespace: str, what: str, timeout: float = ROLLOUT_TIMEOUT, **fields: Any) -> dict[str, Any]:
    """The ModelDeployment's status once every field has the given value."""

    def probe() -> dict[str, Any] | None:
        status = kind.md_status(namespace)
        return status if all(status.get(key) == value for key, value in fields.items()) else None

    return wait_for(probe, timeout=timeout, interval=0.5, what=f"{what} in {namespace}")


def register(kind: Kind, namespace: str, number: int, trained: Trained) -> None:
    """Version `number` in `namespace`: the trained version's artifacts, metrics and lineage."""
    kind.apply(model_version(namespace, number, trained.version["spec"]["uri"], trained.version))


def deploy_first(kind: Kind, namespace: str, first: Trained, strategy: dict[str, Any]) -> None:
    """Version 1 stable and answering through the Gateway."""
    register(kind, namespace, 1, first)
    kind.apply(model_deployment(namespace, strategy))
    until(kind, namespace, "version 1 stable", phase="Stable", stableVersion=1)
    answers(namespace)


@contextmanager
def load(namespace: str) -> Iterator[LoadGenerator]:
    """20 requests a second through the Gateway for as long as the block runs."""
    with LoadGenerator(GATEWAY_URL, host(namespace), "churn", CUSTOMERS, rate=20, max_seconds=1800) as generator:
        yield generator


def failures(generator: LoadGenerator) -> int:
    outcomes = generator.snapshot()
    return sum(count for code, count in outcomes.items() if code != 200)


def test_a_model_deployment_serves_through_the_gateway_with_online_features(
    kind: Kind, namespace: str, first_version: Trained
) -> None:
    deploy_first(kind, namespace, first_version, CANARY)
    predictions = predict(namespace, [{"customer_id": 1042}, {"customer_id": 2042}])
    assert len(predictions) == 2 and all(0.0 <= p <= 1.0 for p in predictions), predictions

    # KServe runs it in RawDeployment mode; Envoy Gateway has accepted the route to it.
    isvc = kind.custom.get_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", "churn-v1"
    )
    assert isvc["metadata"]["labels"]["slipway.dev/deployment"] == "churn"
    ready = {c["type"]: c["status"] for c in isvc["status"]["conditions"]}
    assert ready["Ready"] == "True", isvc["status"]
    assert kind.weights(namespace) == {"churn-v1-predictor": 100}
    route = kind.custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "churn"
    )
    parents = route["status"]["parents"]
    assert [p["controllerName"] for p in parents] == ["gateway.envoyproxy.io/gatewayclass-controller"], parents

    # Prometheus scrapes the predictor (the PodMonitor of kind-up.sh), and the customers' features
    # came from Redis: almost none is missing.
    for _ in range(10):
        predict(namespace, CUSTOMERS[:20])
    selector = f'{{namespace="{namespace}",revision="1"}}'
    wait_for(lambda: kind.served(namespace, 1) >= 10, timeout=90, interval=2, what="Prometheus to see version 1")
    requested = wait_for(
        lambda: kind.scalar(f"sum(slipway_features_requested_total{selector})"),
        timeout=60,
        interval=2,
        what="feature counts",
    )
    missing = kind.scalar(f"sum(slipway_features_missing_total{selector})")
    assert missing / requested < 0.2, f"{missing} of {requested} feature values missing: is Redis materialized?"

    row = kind.kubectl("get", "md", "churn", "-n", namespace, "--no-headers").split()
    assert "Stable" in row, row


def test_a_second_version_rolls_out_by_canary_under_load_and_is_promoted(
    kind: Kind, namespace: str, first_version: Trained, second_version: Trained
) -> None:
    deploy_first(kind, namespace, first_version, CANARY)
    steps_seen: set[tuple[int, int]] = set()

    def promoted() -> dict[str, Any] | None:
        status = kind.md_status(namespace)
        if status.get("candidateVersion") == 2 and status.get("stepStartedAt"):
            steps_seen.add((status["step"], status["canaryWeight"]))
        assert status.get("phase") not in ("Degraded", "RollingBack", "Failed"), status
        return status if status.get("stableVersion") == 2 else None

    with load(namespace) as generator:
        register(kind, namespace, 2, second_version)
        status = wait_for(promoted, timeout=ROLLOUT_TIMEOUT, interval=0.5, what="version 2 promoted")
        wait_for(lambda: kind.weights(namespace).get("churn-v2-predictor") == 100, timeout=60, what="all traffic on 2")
        wait_for(lambda: kind.served(namespace, 2) > 0, timeout=60, interval=2, what="Prometheus to see version 2")
    assert steps_seen == {(0, 25), (1, 50)}, steps_seen
    assert {r["metric"]: r["verdict"] for r in status["analysis"]} == {
        "error-rate": "Passed",
        "latency-p95": "Passed",
        "prediction-mean-shift": "Passed",
    }
    assert [h["outcome"] for h in status["history"] if h["version"] == 2] == ["Promoted"]
    outcomes = generator.snapshot()
    assert outcomes[200] > 100, outcomes
    # Healthy versions only: the Gateway moved the traffic without failing requests.
    assert failures(generator) <= 0.01 * sum(outcomes.values()), (outcomes, generator.errors)


def test_a_faulty_version_is_rolled_back_with_the_reason_in_kubectl_get_md(
    kind: Kind, namespace: str, first_version: Trained
) -> None:
    deploy_first(kind, namespace, first_version, CANARY)
    # Version 1's model, failing 40 % of its calls (pipelines/predictor/faults.py), made in the cluster.
    faulty = f"{DATA}/faulty/{namespace}/v2"
    source = local_path(first_version.version["spec"]["uri"])
    command = ["python", "-m", "pipelines.predictor.faults", "--source", source, "--out", faulty]
    kind.run_job(namespace, "faulty-v2", PREDICTOR_IMAGE, [*command, "--error-rate", "0.4"])

    with load(namespace):
        kind.apply(model_version(namespace, 2, f"file://{faulty}/"))
        status = until(kind, namespace, "version 2 rolled back", phase="Degraded", rolledBackVersion=2)
        assert kind.served(namespace, 2) > 0  # it did get real traffic before it was judged
    assert status["reason"] == "AnalysisFailed" and "error-rate" in status["message"], status
    assert status["stableVersion"] == 1

    def stable_only() -> dict[str, int] | None:
        weights = kind.weights(namespace)
        return weights if weights.get("churn-v2-predictor", 0) == 0 else None

    weights = wait_for(stable_only, timeout=60, what="no traffic on version 2")
    assert weights.get("churn-v1-predictor") == 100, weights
    row = kind.kubectl("get", "md", "churn", "-n", namespace, "--no-headers").split()
    assert "Degraded" in row and "AnalysisFailed" in row, row
    assert "error-rate" in kind.kubectl("describe", "md", "churn", "-n", namespace)


def test_blue_green_switches_at_once_and_abort_switches_back(
    kind: Kind, namespace: str, first_version: Trained, second_version: Trained
) -> None:
    deploy_first(kind, namespace, first_version, BLUE_GREEN)
    with load(namespace) as generator:
        register(kind, namespace, 2, second_version)
        until(kind, namespace, "version 2 switched", stableVersion=2, phase="Stable", previousVersion=1)
        wait_for(
            lambda: kind.weights(namespace) == {"churn-v1-predictor": 0, "churn-v2-predictor": 100},
            timeout=60,
            what="all traffic on 2",
        )
        aborted = kind.slipway(namespace, "abort", "churn")
        assert aborted.returncode == 0, aborted.stderr
        status = until(kind, namespace, "switched back to 1", stableVersion=1, rolledBackVersion=2, timeout=120)
        assert status["reason"] == "Aborted", status
        wait_for(
            lambda: kind.weights(namespace) == {"churn-v1-predictor": 100, "churn-v2-predictor": 0},
            timeout=60,
            what="all traffic on 1",
        )
        # Version 1 was kept warm: it serves the traffic again at once.
        before = kind.served(namespace, 1)
        wait_for(
            lambda: kind.served(namespace, 1) > before + 20, timeout=90, interval=2, what="version 1 serving again"
        )
    view = kind.slipway(namespace, "status", "churn").stdout
    assert "rolled back: version 2" in view, view
    assert generator.snapshot()[0] == 0, generator.errors  # the Gateway always answered
