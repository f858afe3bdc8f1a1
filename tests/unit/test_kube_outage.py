"""The operator's API client across an API server restart, against a real local HTTP server:
a call waits out refused connections, and a write whose answer was lost is never sent twice."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import pytest
from kubernetes import client

from slipway.api.resources import MODEL_DEPLOYMENTS, MODEL_VERSIONS
from slipway.controlplane.server import free_port
from slipway.kube.client import OUTAGE_RETRIES, Kube


class Answers(http.server.BaseHTTPRequestHandler):
    """Answers every request with an object at resourceVersion 7, or drops the connection unanswered."""

    drop: ClassVar[bool] = False
    seen: ClassVar[list[str]] = []

    def _answer(self) -> None:
        Answers.seen.append(self.command)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if Answers.drop:  # the server went away after the request reached it
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = json.dumps({"metadata": {"name": "x", "resourceVersion": "7"}, "items": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PATCH = do_POST = _answer

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def server(port: int, after: float = 0.0, drop: bool = False) -> Iterator[None]:
    """Listens on `port` `after` seconds from now (a restarting API server; with no delay, it
    listens before the block runs); `drop`: every request is cut off unanswered."""
    Answers.seen, Answers.drop = [], drop
    started = threading.Event()
    holder: list[http.server.HTTPServer] = []

    def run() -> None:
        time.sleep(after)
        holder.append(http.server.HTTPServer(("127.0.0.1", port), Answers))
        started.set()
        holder[0].serve_forever(poll_interval=0.05)

    threading.Thread(target=run, daemon=True).start()
    if not after:
        started.wait(10)
    try:
        yield
    finally:
        started.wait(10)
        holder[0].shutdown()
        holder[0].server_close()
        Answers.drop = False


def kube(port: int) -> Kube:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = OUTAGE_RETRIES  # what Kube.connect sets
    return Kube(client.ApiClient(configuration))


def test_a_write_waits_for_the_server_to_come_back() -> None:
    port = free_port()
    with server(port, after=1.5):
        began = time.monotonic()
        assert kube(port).patch_status(MODEL_DEPLOYMENTS, "ns", "x", {"phase": "Stable"}) == "7"
        assert time.monotonic() - began >= 1.4  # it did wait, and it did not fail
    assert Answers.seen == ["PATCH"]


def test_a_write_whose_answer_was_lost_is_not_sent_again() -> None:
    port = free_port()
    with server(port, drop=True):
        body = {"apiVersion": "slipway.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "x"}}
        with pytest.raises(Exception):  # noqa: B017 - urllib3's ProtocolError, whatever wraps it
            kube(port).create(MODEL_VERSIONS, {**body, "metadata": {"name": "x", "namespace": "ns"}})
    assert Answers.seen == ["POST"]  # it may have been applied: never repeated


def test_a_read_whose_answer_was_lost_is_asked_again() -> None:
    port = free_port()
    with server(port, drop=True), pytest.raises(Exception):  # noqa: B017 - dropped every time: fails after its retries
        kube(port).list_objects(MODEL_VERSIONS, "ns")
    assert Answers.seen == ["GET"] * 3  # the first try and two more
