"""The dev stack Gateway's request mirror (the shadow stage) through the real nginx, against two
local HTTP servers: a quick primary, and a mirror that is slow and answers 500.

What a user must never see from a shadowed version: its answers, its status codes, or its latency,
on a fresh connection or on one kept alive. And the mirror must really get copies (with their
bodies) of its share of the requests. The whole dev stack, with model servers, is in
test_serving_executor.py; this is the gateway alone, quick.
"""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slipway.controlplane.server import free_port
from slipway.devstack.gateway import Mirror, Nginx, Target, render_config
from tests.support import wait_for

pytestmark = pytest.mark.integration

HOST = "churn.ml.example.com"
MIRROR_DELAY = 1.5  # seconds the mirror takes for each request


class Backend(ThreadingHTTPServer):
    def __init__(self, name: str, status: int, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.name, self.status, self.delay = name, status, delay
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Backend

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.server.delay)
        with self.server.lock:
            self.server.bodies.append(body)
        answer = f"{self.server.name}:{len(body)}".encode()
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    servers = {"primary": Backend("primary", 200, 0), "mirror": Backend("mirror", 500, MIRROR_DELAY)}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    from slipway.devstack import sysdeps

    try:
        binary = sysdeps.nginx()
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"no nginx: {error}")
    proxy = Nginx(binary, tmp_path, free_port())
    proxy.start(render_config({}, proxy.settings))
    yield proxy
    proxy.stop()


def route(nginx: Nginx, backends: dict[str, Backend], percent: float | None) -> None:
    primary = Target("ml.primary", backends["primary"].server_port)
    mirror = Target("ml.mirror", backends["mirror"].server_port)
    mirrors = {} if percent is None else {HOST: Mirror([(mirror, 1)], percent)}
    assert nginx.apply(render_config({HOST: [(primary, 100)]}, nginx.settings, mirrors))


def post(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes, float]:
    start = time.monotonic()
    connection.request("POST", "/v1/models/churn:predict", body=body, headers={"Host": HOST})
    response = connection.getresponse()
    return response.status, response.read(), time.monotonic() - start


@pytest.mark.parametrize("kept_alive", [False, True], ids=["fresh-connections", "kept-alive"])
def test_a_mirror_gets_copies_and_users_get_only_the_primarys_answers_at_its_speed(
    nginx: Nginx, backends: dict[str, Backend], kept_alive: bool
) -> None:
    route(nginx, backends, 100)
    connection = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=30)
    answers = []
    for index in range(8):
        if not kept_alive:
            connection = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=30)
        answers.append(post(connection, b"x" * (100 + index)))
    assert [(status, body) for status, body, _ in answers] == [(200, f"primary:{100 + i}".encode()) for i in range(8)]
    # Not one answer waited for the slow mirror (8 of them would take 12 s).
    assert max(took for _, _, took in answers) < MIRROR_DELAY / 2, answers
    bodies = wait_for(lambda: sorted(backends["mirror"].bodies) if len(backends["mirror"].bodies) == 8 else None)
    assert bodies == sorted(b"x" * (100 + i) for i in range(8))  # whole copies, bodies and all
    assert len(backends["primary"].bodies) == 8


def test_a_mirror_percent_copies_that_share_and_no_mirror_copies_nothing(
    nginx: Nginx, backends: dict[str, Backend]
) -> None:
    backends["mirror"].delay = 0
    route(nginx, backends, 25)
    for _ in range(200):
        status, body, _ = post(http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=30), b"{}")
        assert (status, body) == (200, b"primary:2")
    time.sleep(0.5)
    assert 25 <= len(backends["mirror"].bodies) <= 75, len(backends["mirror"].bodies)  # 50 expected; sd about 6
    route(nginx, backends, None)
    copies = len(backends["mirror"].bodies)
    for _ in range(20):
        post(http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=30), b"{}")
    time.sleep(0.5)
    assert len(backends["mirror"].bodies) == copies
