"""The ray-serve engine as real processes, against the kserve engine on the same model and online store.

`python -m pipelines.predictor` with SLIPWAY_ENGINE=ray-serve starts its own Ray and two Serve
replicas; a kserve-engine server serves the same run directory with the same Feast store. Same
requests, same answers, same 400s, same metric series; after SIGTERM (or SIGINT) no process of
that Ray instance is left and its temporary directory is gone.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil  # type: ignore[import-untyped]
import pytest
from feature_repo import store as fs
from pipelines.predictor import faults

from tests.integration import test_predictor as base
from tests.support import wait_for

pytestmark = pytest.mark.integration

# The kserve engine's fixtures and server helper (module-scoped here too: one data set, one model).
workdir = base.workdir
feast_data = base.feast_data
training_frame = base.training_frame
run_dir = base.run_dir
MODEL, ROWS = base.MODEL, base.ROWS
Server = base.Server
Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]

RAY_SERVE = {
    "SLIPWAY_ENGINE": "ray-serve",
    "SLIPWAY_RAY_REPLICAS": "2",
    "SLIPWAY_RAY_CPUS_PER_REPLICA": "0.5",  # a fraction: Ray then holds one CPU for both replicas
    "RAY_ADDRESS": "127.0.0.1:1",  # nothing listens there: the engine must start its own Ray regardless
}


def enriched_env(run_dir: Path, feast_data: Path) -> dict[str, str]:
    return {
        "STORAGE_URI": f"file://{run_dir}",
        "SLIPWAY_MODEL": MODEL,
        "SLIPWAY_MODEL_VERSION": "1",
        "SLIPWAY_FEATURE_SERVICE": fs.FEATURE_SERVICE,
        "SLIPWAY_ENTITY_KEY": fs.ENTITY_KEY,
        "SLIPWAY_FEAST_DATA": str(feast_data),
    }


@pytest.fixture(scope="module")
def servers(workdir: Path, run_dir: Path, feast_data: Path) -> Iterator[tuple[Server, Server]]:
    """(kserve engine, ray-serve engine), both enriching from the same store; started together."""
    env = enriched_env(run_dir, feast_data)
    ray_server = Server(workdir, {**env, **RAY_SERVE})
    kserve_server = Server(workdir, env)
    try:
        yield kserve_server.wait_ready(), ray_server.wait_ready()
    finally:
        kserve_server.stop()
        ray_server.stop()


def ray_processes(server: Server) -> list[psutil.Process]:
    return list(psutil.Process(server.process.pid).children(recursive=True))


def names(processes: list[psutil.Process]) -> list[str]:
    out = []
    for p in processes:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.name())
        except psutil.NoSuchProcess:
            continue
    return out


def test_two_replicas_serve_behind_the_same_endpoints(servers: tuple[Server, Server]) -> None:
    kserve_server, ray_server = servers
    assert ray_server.client.get("/v2/health/ready").json() == {"ready": True}
    assert ray_server.client.get(f"/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True}
    running = names(ray_processes(ray_server))
    assert sum(n.startswith("ray::ServeReplica") for n in running) == 2, running
    assert {"raylet", "gcs_server"} <= set(running), running
    assert not names(ray_processes(kserve_server))  # the kserve engine starts no Ray


BODIES: list[tuple[str, dict[str, Any]]] = [
    ("v1", {"instances": ROWS}),
    ("v1", {"instances": [{"customer_id": 1001}, {"customer_id": 1002, "monthly_charges": 3.5}, ROWS[0]]}),
    ("v1", {"instances": [{"customer_id": 99_999_999}]}),  # unknown entity: imputed
    ("v2", {"id": "r-1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 9], "data": ROWS}]}),
    ("v2", {"inputs": [{"name": "customer_id", "datatype": "INT64", "shape": [3], "data": [1001, 1003, 1150]}]}),
    ("v2", {"inputs": [{"name": "j", "datatype": "BYTES", "shape": [1], "data": ['{"customer_id": 1004}']}]}),
]


def call(server: Server, protocol: str, body: dict[str, Any]) -> httpx.Response:
    return server.predict(body["instances"]) if protocol == "v1" else server.infer(body)


def test_answers_equal_the_kserve_engine(servers: tuple[Server, Server]) -> None:
    kserve_server, ray_server = servers
    for protocol, body in BODIES:
        expected, got = call(kserve_server, protocol, body), call(ray_server, protocol, body)
        assert expected.status_code == got.status_code == 200, (body, expected.text, got.text)
        want, have = expected.json(), got.json()
        if protocol == "v1":
            np.testing.assert_allclose(have["predictions"], want["predictions"], rtol=1e-6)
            continue
        (want_out,), (have_out,) = want.pop("outputs"), have.pop("outputs")
        np.testing.assert_allclose(have_out.pop("data"), want_out.pop("data"), rtol=1e-6)
        assert (have, have_out) == (want, want_out)


BAD: list[tuple[str, dict[str, Any] | bytes]] = [
    ("v1", {"instances": [[1, 2, 3]]}),
    ("v1", {"instances": [{"customer_id": 1001, "monthly_charges": "lots"}]}),
    ("v1", {"instances": [{"customer_id": 1001, "monthly_charge": 1}]}),
    ("v1", {"instances": [{"tenure_months": 3}]}),  # no entity key
    ("v1", {"instances": [{"customer_id": "abc"}]}),
    ("v1", {"instances": []}),
    ("v1", b"{nope"),
    ("v2", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}),
    ("v2", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 9], "data": [1, 2, 3, 4, 5, 6, 7, 8, "z"]}]}),
    ("v2", {"inputs": [{"name": "customer_id", "datatype": "FP32", "shape": [1], "data": [1.5]}]}),
]


def raw(server: Server, protocol: str, body: dict[str, Any] | bytes) -> httpx.Response:
    path = f"/v1/models/{MODEL}:predict" if protocol == "v1" else f"/v2/models/{MODEL}/infer"
    return server.client.post(path, content=body) if isinstance(body, bytes) else server.client.post(path, json=body)


def test_bad_requests_are_the_same_400(servers: tuple[Server, Server]) -> None:
    kserve_server, ray_server = servers
    for protocol, body in BAD:
        expected, got = raw(kserve_server, protocol, body), raw(ray_server, protocol, body)
        assert expected.status_code == 400, expected.text
        assert (got.status_code, got.json()) == (expected.status_code, expected.json())
    unknown = ray_server.client.post("/v1/models/other:predict", json={"instances": [ROWS[0]]})
    assert unknown.status_code == 404 and "other" in unknown.json()["error"]


def counts(values: Metrics) -> Metrics:
    """The slipway_ samples that two engines agree on: all but creation times and the durations' buckets and sums."""
    timing = ("slipway_request_duration_seconds_bucket", "slipway_request_duration_seconds_sum")
    return {k: v for k, v in values.items() if not k[0].endswith("_created") and k[0] not in timing}


def test_metrics_have_the_same_series_and_counts(servers: tuple[Server, Server]) -> None:
    kserve_server, ray_server = servers
    before = {s: counts(s.metrics()) for s in servers}
    for server in servers:  # the same requests to both, one after the other
        for protocol, body in BODIES[:3]:
            assert call(server, protocol, body).status_code == 200
        assert raw(server, *BAD[0]).status_code == 400
    after = {s: counts(s.metrics()) for s in servers}
    series = {s: {(name, tuple(k for k, _ in labels)) for name, labels in after[s]} for s in servers}
    assert series[ray_server] == series[kserve_server]
    assert ("slipway_requests_total", ("model", "outcome", "revision")) in series[ray_server]
    for name in ("slipway_predictions_total", "slipway_features_requested_total", "slipway_features_missing_total"):
        assert (name, ("model", "revision")) in series[ray_server]
    delta = {s: {k: v - before[s].get(k, 0.0) for k, v in after[s].items()} for s in servers}
    assert delta[ray_server].keys() == delta[kserve_server].keys()
    for key, value in delta[kserve_server].items():
        assert delta[ray_server][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    labels = {"model": MODEL, "revision": "1"}
    assert base.sample(delta[ray_server], "slipway_requests_total", **labels, outcome="success") == 3
    assert base.sample(delta[ray_server], "slipway_requests_total", **labels, outcome="client_error") == 1
    assert base.sample(delta[ray_server], "slipway_predictions_total", **labels) == 7
    # The input monitor, in the front, sees the rows as the replicas filled them from the store.
    monitored = {s: base.input_figures(after[s], "1") for s in servers}
    assert monitored[ray_server]["rows"] == monitored[kserve_server]["rows"] > 0
    for name in ("missing_fraction", "out_of_range_fraction"):
        assert monitored[ray_server][name] == pytest.approx(monitored[kserve_server][name]), name
    assert set(monitored[ray_server]["missing_fraction"]) == set(base.FEATURES)
    assert 0 < min(monitored[ray_server]["missing_fraction"].values()) < 1  # the unknown entity's row


def ray_instance(server: Server) -> tuple[list[psutil.Process], Path]:
    """The server's Ray processes and its Ray temporary directory (from the raylet's command line)."""
    processes = ray_processes(server)
    temp_dirs = {
        arg.split("=", 1)[1] for p in processes if p.name() == "raylet" for arg in p.cmdline() if "--temp_dir=" in arg
    }
    assert len(temp_dirs) == 1, temp_dirs
    (temp_dir,) = (Path(d) for d in temp_dirs)
    assert temp_dir.is_dir()
    return processes, temp_dir


def wait_until_nothing_is_left(server: Server, processes: list[psutil.Process], temp_dir: Path) -> int:
    """The predictor's exit status, once it and every Ray process it had have exited."""
    wait_for(lambda: server.process.poll() is not None, timeout=60, interval=0.2, what="the predictor to exit")
    wait_for(lambda: not names(processes), timeout=30, interval=0.2, what="every Ray process to exit")
    assert not temp_dir.exists()
    return server.process.returncode


def stop_and_check_nothing_is_left(server: Server, sig: signal.Signals) -> None:
    processes, temp_dir = ray_instance(server)
    server.client.close()
    server.process.send_signal(sig)
    assert wait_until_nothing_is_left(server, processes, temp_dir) == 0, server.log.read_text()[-3000:]


def test_sigterm_stops_serve_and_ray(servers: tuple[Server, Server]) -> None:
    _, ray_server = servers
    stop_and_check_nothing_is_left(ray_server, signal.SIGTERM)
    assert "Serve and Ray stopped" in ray_server.log.read_text()


def test_a_failing_model_is_the_same_500_and_sigint_stops_it(workdir: Path, run_dir: Path) -> None:
    """A second Ray instance (one replica) on a model that always raises, beside a kserve-engine server."""
    failing = faults.make_faulty(str(run_dir), str(workdir / "runs" / "churn-failing"), error_rate=1.0)
    env = {"SLIPWAY_MODEL_DIR": failing, "SLIPWAY_MODEL": MODEL, "SLIPWAY_MODEL_VERSION": "9"}
    ray_server = Server(workdir, {**env, **RAY_SERVE, "SLIPWAY_RAY_REPLICAS": "1"})
    kserve_server = Server(workdir, env)
    try:
        kserve_server.wait_ready(), ray_server.wait_ready()
        expected, got = kserve_server.predict([ROWS[0], ROWS[1]]), ray_server.predict([ROWS[0], ROWS[1]])
        assert expected.status_code == 500 and faults.INJECTED in expected.json()["error"]
        assert (got.status_code, got.json()) == (500, expected.json())
        labels = {"model": MODEL, "revision": "9"}
        assert base.sample(ray_server.metrics(), "slipway_requests_total", **labels, outcome="server_error") == 1
        stop_and_check_nothing_is_left(ray_server, signal.SIGINT)
    finally:
        kserve_server.stop()
        ray_server.stop()


def test_a_ray_that_dies_stops_the_predictor(workdir: Path, run_dir: Path) -> None:
    """The raylet killed under a serving predictor: it exits with status 1 (the kubelet restarts it)."""
    server = Server(workdir, {"SLIPWAY_MODEL_DIR": str(run_dir), **RAY_SERVE, "SLIPWAY_RAY_REPLICAS": "1"})
    try:
        server.wait_ready()
        processes, temp_dir = ray_instance(server)
        (raylet,) = (p for p in processes if p.name() == "raylet")
        raylet.kill()
        assert wait_until_nothing_is_left(server, processes, temp_dir) == 1
        assert "Ray's raylet exited; stopping the predictor" in server.log.read_text()
    finally:
        server.stop()
