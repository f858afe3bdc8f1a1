"""The dev stack's kubelet and Gateway: pod status as a kubelet writes it, probes, endpoints, routing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from slipway.devstack.gateway import Target
from slipway.devstack.kubelet import HOST_IP, NODE, Container, node_manifest, pod_status, refusal
from slipway.devstack.modelserver import FAILED, READY, STARTING, Probe, server_args
from slipway.devstack.serving import endpoints, routing

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 5, 12, 5, 0, tzinfo=UTC)
SCHEDULED = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-05T11:59:00Z"}


def pod(
    name: str = "churn-v1-predictor-abc", uid: str = "u1", labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": uid,
            "labels": labels or {"app": "isvc.churn-v1-predictor"},
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "kserve-container", "image": "local-dev"}], **spec},
        "status": {"phase": "Pending", "conditions": [SCHEDULED]},
    }


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_a_starting_container_is_running_but_not_ready() -> None:
    status = pod_status(pod(), Container(STARTING, pid=42, started_at="2026-12-05T12:00:00Z"), None, NOW)
    assert (status["phase"], status["podIP"], status["hostIP"]) == ("Running", HOST_IP, HOST_IP)
    assert conditions(status) == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "False",
        "ContainersReady": "False",
        "PodScheduled": "True",
    }
    (container,) = status["containerStatuses"]
    assert container["state"] == {"running": {"startedAt": "2026-12-05T12:00:00Z"}}
    assert (container["ready"], container["started"], container["containerID"]) == (False, True, "devstack://42")
    assert "lastState" not in container


def test_ready_keeps_its_transition_time_while_it_holds() -> None:
    first = pod_status(pod(), Container(READY, pid=42), None, NOW)
    again = pod_status({**pod(), "status": first}, Container(READY, pid=42), None, LATER)
    ready = {c["type"]: c for c in again["conditions"]}["Ready"]
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", "2026-12-05T12:00:00Z")
    assert again["startTime"] == first["startTime"] == "2026-12-05T12:00:00Z"


def test_a_container_that_exited_is_in_back_off_with_its_exit_and_log() -> None:
    exited = Container(FAILED, restarts=2, exit_code=3, finished_at="2026-12-05T11:59:30Z", message="FileNotFoundError")
    status = pod_status(pod(), exited, None, NOW)
    (container,) = status["containerStatuses"]
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["lastState"]["terminated"] == {
        "exitCode": 3,
        "reason": "Error",
        "finishedAt": "2026-12-05T11:59:30Z",
        "message": "FileNotFoundError",
    }
    assert container["restartCount"] == 2 and conditions(status)["Ready"] == "False"
    # Running again after the back-off: the last exit stays in lastState.
    again = pod_status(
        {**pod(), "status": status}, Container(STARTING, 3, pid=7, exit_code=3, finished_at="x"), None, LATER
    )
    assert again["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 3
    assert "running" in again["containerStatuses"][0]["state"]


def test_a_pod_this_kubelet_cannot_run_fails_with_the_reason() -> None:
    two = pod(containers=[{"name": "a"}, {"name": "b"}])
    assert refusal(two) == "the dev stack's kubelet runs pods of exactly one container"
    assert refusal(pod(initContainers=[{"name": "init"}])) == "the dev stack's kubelet runs no init containers"
    assert refusal(pod()) is None
    status = pod_status(two, None, refusal(two), NOW)
    assert (status["phase"], status["reason"], status["hostIP"]) == ("Failed", "Unsupported", HOST_IP)
    assert "exactly one container" in status["message"]


def test_the_node_is_ready_with_room_for_the_stack() -> None:
    node = node_manifest(NOW)
    assert node["metadata"]["name"] == NODE
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]} == {"Ready": "True"}
    assert node["status"]["allocatable"]["cpu"] == "64"


@pytest.mark.parametrize(
    ("container", "probe"),
    [
        ({}, None),  # no probe: ready once running
        ({"readinessProbe": {"tcpSocket": {"port": 8080}}}, Probe(None, 10.0, 3)),  # KServe's default
        (
            {"readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": 5}},
            Probe("/v2/health/ready", 5.0, 3),
        ),
    ],
)
def test_the_probe_is_the_containers_readiness_probe(container: dict[str, Any], probe: Probe | None) -> None:
    assert Probe.of(container) == probe


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model_name=churn", "--http_port=8080"], ["--model_name=churn"]),
        (["--http_port", "8080", "--model_name=churn", "--grpc_port=9000"], ["--model_name=churn"]),
        ([], []),
    ],
)
def test_server_args_take_this_machines_ports(args: list[str], expected: list[str]) -> None:
    assert server_args({"args": args}, 1234, 5678) == [*expected, "--http_port=1234", "--grpc_port=5678"]


def service(name: str, selector: dict[str, str] | None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml"}, "spec": {"selector": selector}}


def test_a_services_endpoints_are_its_selected_pods_with_a_ready_process() -> None:
    v1 = pod("churn-v1-predictor-a", "u1")
    v1b = pod("churn-v1-predictor-b", "u2")
    v2 = pod("churn-v2-predictor-a", "u3", {"app": "isvc.churn-v2-predictor"})
    other_namespace = {
        **pod("churn-v1-predictor-c", "u4"),
        "metadata": {**v1["metadata"], "namespace": "x", "uid": "u4"},
    }
    services = [
        service("churn-v1-predictor", {"app": "isvc.churn-v1-predictor"}),
        service("churn-v2-predictor", {"app": "isvc.churn-v2-predictor"}),
        service("headless", None),  # no selector: no endpoints of ours
    ]
    ready = {"u1": "127.0.0.1:4001", "u3": "127.0.0.1:4003", "u4": "127.0.0.1:4004"}  # u2 is not ready
    assert endpoints(services, [v1, v1b, v2, other_namespace], ready) == {
        ("ml", "churn-v1-predictor"): [Target("ml.churn-v1-predictor-a", 4001)],
        ("ml", "churn-v2-predictor"): [Target("ml.churn-v2-predictor-a", 4003)],
        ("ml", "headless"): [],
    }


def route(name: str, hosts: list[str], backend: str, created: str, parent: str = "slipway-gateway") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml", "generation": 1, "creationTimestamp": created},
        "spec": {
            "parentRefs": [{"name": parent, "namespace": "slipway-system"}],
            "hostnames": hosts,
            "rules": [{"backendRefs": [{"name": backend, "port": 80}]}],
        },
    }


def test_routing_takes_attached_routes_and_the_older_route_keeps_a_host() -> None:
    a, b = Target("ml.a", 4001), Target("ml.b", 4002)
    backends = {("ml", "a-predictor"): [a], ("ml", "b-predictor"): [b]}
    routes = [
        route("newer", ["churn.ml.example.com", "b.ml.example.com"], "b-predictor", "2026-12-05T12:00:01Z"),
        route("older", ["churn.ml.example.com"], "a-predictor", "2026-12-05T12:00:00Z"),
        route("elsewhere", ["x.ml.example.com"], "a-predictor", "2026-12-05T12:00:00Z", parent="another"),
    ]
    table, results = routing(routes, backends, ("slipway-system", "slipway-gateway"))
    assert table == {"churn.ml.example.com": [(a, 1.0)], "b.ml.example.com": [(b, 1.0)]}
    assert [r["metadata"]["name"] for r, parents, _ in results if parents] == ["older", "newer"]
