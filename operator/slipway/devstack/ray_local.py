"""One local Ray instance (head only) with its job server, owned by the dev stack."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from ..controlplane.server import free_port


class LocalRay:
    """`ray start --head --block` as a child process: stopping it stops this Ray, no other.

    It runs with token auth and a token of its own. Clients get it explicitly (`env` for child
    processes, `headers` for clients in this process) rather than through this process's
    environment: Ray reads RAY_AUTH_MODE into a cache at import, so setting it here later would be
    seen by some clients and not others.
    """

    def __init__(self, log_path: Path, num_cpus: int | None = None) -> None:
        self.log_path = log_path
        self.num_cpus = num_cpus or max(2, os.cpu_count() or 2)
        self.dashboard_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.temp_dir = tempfile.mkdtemp(prefix="sr-", dir="/tmp")  # short: Ray's socket paths are bounded
        self.token = secrets.token_hex(32)
        self.token_path = Path(self.temp_dir) / "auth_token"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        """What a process started later needs to be a client of this Ray (Ray's jobs inherit it)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers for a JobSubmissionClient of this Ray in this process."""
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 120) -> None:
        self.token_path.touch(mode=0o600)
        self.token_path.write_text(self.token)
        ray = Path(sys.executable).with_name("ray")
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [
                str(ray),
                "start",
                "--head",
                "--block",
                "--disable-usage-stats",
                f"--port={free_port()}",
                f"--num-cpus={self.num_cpus}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--temp-dir={self.temp_dir}",
                # Free ports for every agent, so this Ray never collides with another on the machine.
                f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}",
                f"--metrics-export-port={free_port()}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}; see {self.log_path}")
            try:
                JobSubmissionClient(self.address, headers=self.headers).list_jobs()
                return
            except (ConnectionError, RuntimeError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"Ray's job server did not answer within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        # Some of Ray's processes outlive `ray start --block`; ours all name our temp dir.
        for pid in _pids_mentioning(self.temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.pid != os.getpid() and text in " ".join(process.cmdline()):
                found.append(process.pid)
    return found
