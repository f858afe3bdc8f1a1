"""One revision's model-server process (`python -m pipelines.predictor`), as a kubelet runs a pod:
readiness probe, restarts with back-off after an exit, the tail of its log for status.

A pod's processes end with the pod. Here a model server leads its own session, and what it starts
(Ray's GCS, raylet and workers, for the ray-serve engine) stays in that session or below it:
stopping a revision, or a server that exited, ends every one of them, as a container's cgroup would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..controlplane.server import free_port
from . import kserve

log = logging.getLogger("slipway.devstack.serving")

PROBE_PERIOD = 2.0  # seconds between readiness probes of a ready server
# No start-up deadline (a kubelet has none without a startupProbe): a ray-serve server starts Ray and
# its replicas first, 10-20 s here; the rollout's progressDeadline judges a server that never answers.
# A pod's own Ray: without an address Ray joins any Ray found on the machine (the dev stack's
# training Ray, another revision's), which a pod, with its own network and /tmp, never sees.
POD_ENV = {"RAY_ADDRESS": "local"}
FAILURE_THRESHOLD = 3  # failed probes in a row before a ready server counts as unready
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
class RevisionSpec:
    name: str
    template: str  # kserve.template_hash
    container: dict[str, Any]


def starttime(pid: int) -> str | None:
    """The process's start time in ticks: with the pid, it names one process (pids get reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


def family(leader: int) -> set[tuple[int, str]]:
    """Live processes (pid, start time) in `leader`'s session or descended from it, zombies excepted.

    A session catches what was started and then orphaned (Ray's processes outlive a killed driver
    for a moment); descent catches what left the session (setsid) while its parent lives.
    """
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    members = {pid for pid, fields in stats.items() if fields[3] == str(leader)}
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    todo = [leader, *members]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in members:
                members.add(child)
                todo.append(child)
    return {(pid, stats[pid][19]) for pid in members if pid in stats and stats[pid][0] != "Z"}


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
    """One revision's model-server process, its readiness probe and its restarts."""

    def __init__(self, spec: RevisionSpec, namespace: str, module: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.spec = spec
        self.namespace = namespace
        self.module = module
        self.env = dict(env)
        self.log_path = log_dir / f"{spec.name}.log"
        self.port, self.grpc_port = new_port(), new_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = kserve.MISSING
        self.message = ""
        self.exit_code: int | None = None
        self.restarts = 0
        self.restart_at = 0.0
        self.failures = 0
        self.next_probe = 0.0
        self._log_offset = 0
        self.started: str | None = None  # the process's start time: with its pid, it names it
        self.seen: set[tuple[int, str]] = set()  # its processes and theirs, as last looked at

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def upstream(self) -> str:
        return f"{self.namespace}.{self.spec.name}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        container = self.spec.container
        command = [sys.executable, "-m", self.module, *kserve.server_args(container, self.port, self.grpc_port)]
        env = {**os.environ, **POD_ENV, **self.env, **kserve.container_env(container)}
        with open(self.log_path, "ab") as out:
            self._log_offset = out.tell()
            out.write(f"--- {datetime.now(UTC).isoformat()} {' '.join(command)}\n".encode())
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.started = starttime(self.proc.pid)
        self.seen = set()
        self.state = kserve.STARTING if self.state != kserve.FAILED else kserve.FAILED
        self.failures = 0
        self.next_probe = 0.0
        log.info("started %s/%s on port %d (pid %d)", self.namespace, self.spec.name, self.port, self.proc.pid)

    def check(self, now: float) -> None:
        """Notices an exit, restarts after the back-off, probes readiness when due."""
        if self.proc is None:
            return
        code = self.proc.poll()
        if code is not None:
            if self.state != kserve.FAILED or self.exit_code is None:
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
            self.state, self.message, self.failures = kserve.READY, "", 0
            self.next_probe = now + PROBE_PERIOD
        elif self.state == kserve.READY:
            self.failures += 1
            self.next_probe = now + PROBE_PERIOD
            if self.failures >= FAILURE_THRESHOLD:
                self.state = kserve.UNREADY

    def _failed(self, code: int, now: float) -> None:
        self._kill_family()  # what it started dies with it, as in a container; a restart starts afresh
        delay = min(BACKOFF_MAX, BACKOFF_START * 2**self.restarts)
        self.restarts += 1
        self.exit_code = code
        self.restart_at = now + delay
        self.state = kserve.FAILED
        restart = f"restart {self.restarts} in {delay:.0f}s"
        self.message = f"revision {self.spec.name} exited with code {code} ({restart}): {self.tail()}"
        log.warning("%s/%s exited with %d; restarting in %.0fs", self.namespace, self.spec.name, code, delay)

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
        try:
            with urllib.request.urlopen(f"http://{self.address}{kserve.READY_PATH}", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def view(self) -> kserve.RevisionState:
        return kserve.RevisionState(self.state, self.message, self.exit_code)

    def processes(self) -> set[tuple[int, str]]:
        """Its processes still alive: everything seen so far, and what is in its session now."""
        # Its session id is its pid: looked up only while that pid is still its (alive, a zombie, or
        # free), since a new process that got the pid would lead a session of its own.
        if self.proc is not None and starttime(self.proc.pid) in (None, self.started):
            self.seen |= family(self.proc.pid)
        self.seen = {(pid, started) for pid, started in self.seen if alive(pid, started)}
        return self.seen

    def terminate(self) -> None:
        leader = self.proc.pid if self.proc else None
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        # Once each: a second SIGTERM makes a server (uvicorn) skip its graceful shutdown.
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
