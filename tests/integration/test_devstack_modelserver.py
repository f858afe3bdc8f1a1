"""The dev stack's model-server processes end with everything they started, as a pod's do.

Real processes: a stand-in server that starts helpers the way Ray does (its own process group,
deaf to SIGTERM; orphaned grandchildren), a server that exits and leaves a helper behind, and a
real Ray started by `ray.init` inside the server (the ray-serve engine's way).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from slipway.devstack.modelserver import FAILED, READY, ModelServer, alive
from tests.support import REPO, wait_for

pytestmark = pytest.mark.integration

SERVE = """
import argparse, http.server
parser = argparse.ArgumentParser()
parser.add_argument("--http_port", type=int)
parser.add_argument("--grpc_port", type=int)
args, _ = parser.parse_known_args()
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *_):
        pass
http.server.HTTPServer(("127.0.0.1", args.http_port), Ready).serve_forever()
"""
HELPERS = """
import os, pathlib, subprocess, sys, time
marker = pathlib.Path(os.environ["DEAF_MARKER"])
deaf = (
    "import os, pathlib, signal, time; os.setpgrp(); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "pathlib.Path(os.environ['DEAF_MARKER']).touch(); time.sleep(600)"
)
subprocess.Popen([sys.executable, "-c", deaf])  # out of the server's process group, ignores SIGTERM
orphan = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])"
subprocess.Popen([sys.executable, "-c", orphan]).wait()  # its child is orphaned at once
while not marker.exists():  # ready only once the helper is deaf to SIGTERM
    time.sleep(0.02)
"""
EXITS = """
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
sys.exit(3)
"""
RAY = """
import os, ray
ray.init(num_cpus=1, include_dashboard=False)  # RAY_ADDRESS=local from the executor: its own Ray
assert ray.cluster_resources().get("CPU") == 1, ray.cluster_resources()
"""


def server(tmp_path: Path, name: str, *parts: str) -> ModelServer:
    package = tmp_path / "mods"
    package.mkdir(exist_ok=True)
    (package / f"{name}.py").write_text("\n".join(parts))
    env = {"PYTHONPATH": f"{package}{os.pathsep}{REPO / 'operator'}", "DEAF_MARKER": str(tmp_path / f"{name}.deaf")}
    probe = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 2}
    container = {"name": "kserve-container", "args": [], "readinessProbe": probe}
    return ModelServer(f"ns/{name}", container, name, env, tmp_path / "logs")


def until(server: ModelServer, done: Callable[[ModelServer], bool], timeout: float, what: str) -> None:
    def probe() -> bool:
        server.check(time.monotonic())
        return done(server)

    try:
        wait_for(probe, timeout=timeout, interval=0.2, what=what)
    except AssertionError:
        raise AssertionError(f"{what}; its log:\n{server.log_path.read_text()[-3000:]}") from None


def test_stopping_a_server_ends_what_it_started(tmp_path: Path) -> None:
    srv = server(tmp_path, "helpers", HELPERS, SERVE)
    srv.start()
    try:
        until(srv, lambda s: s.state == READY, 30, "the server to answer readiness")
        family = wait_for(lambda: srv.processes() if len(srv.processes()) >= 3 else None, what="its helpers")
        srv.terminate()
        wait_for(lambda: srv.proc is not None and srv.proc.poll() is not None, timeout=10, what="the server to exit")
        assert not srv.gone()  # the helper that ignores SIGTERM is still there after the server exited
        srv.kill()
        wait_for(srv.gone, timeout=5, what="SIGKILL to land")  # it takes effect a moment later
        assert not [p for p in family if alive(*p)]
    finally:
        srv.kill()


def test_a_server_that_exits_takes_what_it_started_with_it(tmp_path: Path) -> None:
    srv = server(tmp_path, "exits", EXITS)
    srv.start()
    try:
        until(srv, lambda s: s.state == FAILED, 30, "the exit to be noticed")
        assert srv.exit_code == 3
        wait_for(srv.gone, timeout=5, what="the helper it left to be killed")
    finally:
        srv.kill()


def test_a_ray_started_by_the_server_ends_with_it(tmp_path: Path) -> None:
    srv = server(tmp_path, "withray", RAY, SERVE)
    srv.start()
    try:
        until(srv, lambda s: s.state == READY, 120, "the server to start Ray and answer")
        family = srv.processes()
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid, _ in family if alive(pid, _)}
        assert {"gcs_server", "raylet"} <= names, names
        srv.terminate()
        deadline = time.monotonic() + 10  # the executor's grace period, then SIGKILL for what is left
        while not srv.gone() and time.monotonic() < deadline:
            time.sleep(0.1)
        srv.kill()
        wait_for(srv.gone, timeout=5, what="SIGKILL to land")
        assert not [p for p in family if alive(*p)]
    finally:
        srv.kill()
