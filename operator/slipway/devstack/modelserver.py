"""One pod's model-server process (`python -m pipelines.predictor`), as a kubelet runs a container:
the pod's readiness probe, restarts with back-off after an exit, the tail of its log for status.

A pod's processes end with the pod. Here a model server leads its own session, and what it starts
(Ray's GCS, raylet and workers, for the ray-serve engine) stays in that session or below it:
stopping a revision, or a server that exited, ends every one of them, as a container's cgroup would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from ..controlplane.server import free_port

log = logging.getLogger("slipway.devstack.kubelet")

# What one model-server process is doing.
STARTING = "Starting"
READY = "Ready"
UNREADY = "Unready"  # was ready, fails its readiness probe now
FAILED = "Failed"  # exited; restarted after a back-off

# No start-up deadline (a kubelet has none without a startupProbe): a ray-serve server starts Ray and
# its replicas first, 10-20 s here; the rollout's progressDeadline judges a server that never answers.
# A pod's own Ray: without an address Ray joins any Ray found on the machine (the dev stack's
# training Ray, another revision's), which a pod, with its own network and /tmp, never sees.
POD_ENV = {"RAY_ADDRESS": "local"}
BACKOFF_START, BACKOFF_MAX = 5.0, 300.0  # restart delays of a server that exited, as a kubelet's

# Ports handed to our servers: free_port() releases its socket, so two servers created in one pass
# could otherwise draw the same port before either binds it.
_taken: set[int] = set()


def new_port() -> int:
    for _ in range(100):
        port = free_port()
        if port not in _taken:
            _taken.add(port)
            return port
    raise RuntimeError("no free local port")


def release(*ports: int) -> None:
    _taken.difference_update(ports)


@dataclass(frozen=True)
class Probe:
    """A container's readinessProbe, against the server's own port: an HTTP GET of `path`, or,
    without one, a TCP connect (KServe's default probe is a tcpSocket on the container port)."""

    path: str | None = None
    period: float = 10.0
    failure_threshold: int = 3

    @classmethod
    def of(cls, container: Mapping[str, Any]) -> Probe | None:
        """None for a container without a readinessProbe: ready once running, as a kubelet has it."""
        spec = container.get("readinessProbe")
        if not spec:
            return None
        path = (spec.get("httpGet") or {}).get("path")
        return cls(path, float(spec.get("periodSeconds", 10)), int(spec.get("failureThreshold", 3)))


def server_args(container: Mapping[str, Any], http_port: int, grpc_port: int) -> list[str]:
    """The container's args with this machine's ports (a pod has its own network; we share one)."""
    args = [str(a) for a in container.get("args") or []]
    ports = ("--http_port", "--grpc_port")
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ports:
            skip = True  # "--http_port 8080": drop the value too
        elif not arg.startswith(tuple(f"{p}=" for p in ports)):
            kept.append(arg)
    return [*kept, f"--http_port={http_port}", f"--grpc_port={grpc_port}"]


def starttime(pid: int) -> str | None:
    """The process's start time: with the pid, it names one process (pids get reused)."""
    try:
        return str(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def alive(pid: int, started: str) -> bool:
    try:
        process = psutil.Process(pid)
        return str(process.create_time()) == started and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def family(leader: int) -> set[tuple[int, str]]:
    """Live processes (pid, start time) in `leader`'s session or descended from it, zombies excepted.

    A session catches what was started and then orphaned (Ray's processes outlive a killed driver
    for a moment); descent catches what left the session (setsid) while its parent lives.
    """
    members: set[psutil.Process] = set()
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(process.pid) == leader:
                members |= {process, *process.children(recursive=True)}
    found = set()
    for process in members:
        with contextlib.suppress(psutil.Error):
            if process.status() != psutil.STATUS_ZOMBIE:
                found.add((process.pid, str(process.create_time())))
    return found


def marked(name: str, value: str) -> list[int]:
    """Processes, other than this one, whose environment carries `name=value`: every process
    started under it inherits the variable, also those that leave its process tree."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.pid != os.getpid() and process.environ().get(name) == value:
                found.append(process.pid)
    return found


def signal_all(processes: set[tuple[int, str]], sig: signal.Signals) -> None:
    for pid, started in processes:
        if alive(pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


class ModelServer:
    """One pod's model-server process, its readiness probe and its restarts."""

    def __init__(
        self,
        name: str,
        container: Mapping[str, Any],
        module: str,
        env: Mapping[str, str],
        log_dir: Path,
    ) -> None:
        self.name = name  # <namespace>/<pod>
        self.container = dict(container)
        self.probe = Probe.of(container)
        self.module = module
        self.env = dict(env)
        self.log_path = log_dir / f"{name.replace('/', '_')}.log"
        self.port, self.grpc_port = new_port(), new_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = STARTING
        self.message = ""
        self.exit_code: int | None = None
        self.restarts = 0
        self.restart_at = 0.0
        self.failures = 0
        self.next_probe = 0.0
        self._log_offset = 0
        self.started: str | None = None  # the process's start time: with its pid, it names it
        self.seen: set[tuple[int, str]] = set()  # its processes and theirs, as last looked at
        self.terminated_at: float | None = None  # when it was asked to stop (monotonic)
        self.started_at = datetime.now(UTC)  # of the process running now
        self.last_exit: tuple[int, datetime] | None = None  # its last exit code and time, kept across restarts

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", self.module, *server_args(self.container, self.port, self.grpc_port)]
        env = {**os.environ, **POD_ENV, **self.env}
        with open(self.log_path, "ab") as out:
            self._log_offset = out.tell()
            out.write(f"--- {datetime.now(UTC).isoformat()} {' '.join(command)}\n".encode())
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.started = starttime(self.proc.pid)
        self.started_at = datetime.now(UTC)
        self.seen = set()
        self.state = STARTING if self.state != FAILED else FAILED
        self.failures = 0
        self.next_probe = 0.0
        log.info("started %s on port %d (pid %d)", self.name, self.port, self.proc.pid)

    def check(self, now: float) -> None:
        """Notices an exit, restarts after the back-off, probes readiness when due."""
        if self.proc is None:
            return
        code = self.proc.poll()
        if code is not None:
            if self.state != FAILED or self.exit_code is None:
                self._failed(code, now)
            elif now >= self.restart_at:
                self.exit_code = None  # running again; the failure message stays until it is ready
                release(self.port, self.grpc_port)  # in case another process took them meanwhile
                self.port, self.grpc_port = new_port(), new_port()
                self.start()
            return
        if now < self.next_probe:
            return
        if self._probe():
            self.state, self.message, self.failures = READY, "", 0
            self.next_probe = now + (self.probe.period if self.probe else 1.0)
        elif self.state == READY and self.probe:
            self.failures += 1
            self.next_probe = now + self.probe.period
            if self.failures >= self.probe.failure_threshold:
                self.state = UNREADY

    def _failed(self, code: int, now: float) -> None:
        self._kill_family()  # what it started dies with it, as in a container; a restart starts afresh
        delay = min(BACKOFF_MAX, BACKOFF_START * 2**self.restarts)
        self.restarts += 1
        self.exit_code = code
        self.last_exit = (code, datetime.now(UTC))
        self.restart_at = now + delay
        self.state = FAILED
        self.message = self.tail()
        log.warning("%s exited with %d; restarting in %.0fs", self.name, code, delay)

    def tail(self, limit: int = 1500) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines()[1:] if line.strip()]
        return "\n".join(lines)[-limit:]

    def _probe(self) -> bool:
        """The readiness probe, until it first passes polled on every pass (a kubelet would wait
        initialDelaySeconds, then periodSeconds: polling sooner only notices readiness sooner)."""
        if self.probe is None:
            return True
        try:
            if self.probe.path is None:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            with urllib.request.urlopen(f"http://{self.address}{self.probe.path}", timeout=1) as response:
                return bool(200 <= response.status < 400)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def processes(self) -> set[tuple[int, str]]:
        """Its processes still alive: everything seen so far, and what is in its session now."""
        # Its session id is its pid: looked up only while that pid is still its (alive, a zombie, or
        # free), since a new process that got the pid would lead a session of its own.
        if self.proc is not None and starttime(self.proc.pid) in (None, self.started):
            self.seen |= family(self.proc.pid)
        self.seen = {(pid, started) for pid, started in self.seen if alive(pid, started)}
        return self.seen

    def terminate(self) -> None:
        """SIGTERM to it and what it started, once: a second makes a server (uvicorn) skip its
        graceful shutdown."""
        if self.terminated_at is not None:
            return
        self.terminated_at = time.monotonic()
        leader = self.proc.pid if self.proc else None
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        signal_all({p for p in self.processes() if _group(p[0]) != leader}, signal.SIGTERM)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._kill_family()

    def _kill_family(self) -> None:
        signal_all(self.processes(), signal.SIGKILL)

    def gone(self) -> bool:
        """It and every process it started have exited."""
        return (self.proc is None or self.proc.poll() is not None) and not self.processes()

    def release(self) -> None:
        """Its ports may be handed out again (once the process is gone)."""
        release(self.port, self.grpc_port)
