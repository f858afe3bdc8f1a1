"""Runs etcd and kube-apiserver on free loopback ports and writes a kubeconfig for them."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .assets import Assets, find_assets

STATE_FILE = "controlplane.json"
# Every request but the admin's (tests and set-up) at Metadata level: who, what, verb, response.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "None", "users": ["admin"]}, {"level": "Metadata"}],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class State:
    """What `slipway dev down` needs to stop a control plane started elsewhere."""

    pids: list[int]
    port: int
    kubeconfig: str


class ControlPlane:
    """etcd + kube-apiserver as child processes; a context manager that always stops them."""

    def __init__(
        self, workdir: Path, assets: Assets | None = None, users: Sequence[str] = (), audit: bool = False
    ) -> None:
        """`users`: extra identities (e.g. system:serviceaccount:ns:name), each with a kubeconfig of
        its own (`kubeconfig_for`) and only what RBAC grants it. `audit`: record their requests
        in `audit_log` (one JSON event per line), to compare what a component calls with what it
        is granted."""
        self.workdir = workdir
        self.assets = assets or find_assets()
        self.kubeconfig = workdir / "kubeconfig"
        self.users = list(users)
        self.audit_log = workdir / "audit.log" if audit else None
        self._tokens: dict[str, str] = {}
        self.port = 0
        self._procs: list[subprocess.Popen[bytes]] = []
        self._names: dict[int, str] = {}
        self._argv: dict[str, list[str]] = {}
        self._admin_token = ""

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.stop()

    def start(self, timeout: float = 120) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        etcd_port, peer_port, self.port = free_port(), free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(self.assets.etcd),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",  # throwaway data: durability buys nothing here
                "--log-level=warn",
            ],
        )
        key = self.workdir / "service-account.key"
        key.write_bytes(
            rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        tokens = self.workdir / "tokens.csv"
        self._tokens = {user: secrets.token_hex(16) for user in self.users}
        tokens.write_text(
            f'{token},admin,admin,"system:masters"\n'
            + "".join(f"{secret},{user},{user}\n" for user, secret in self._tokens.items())
        )
        self._spawn(
            "kube-apiserver",
            [
                str(self.assets.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",  # loopback cannot be a Service endpoint
                f"--secure-port={self.port}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={key}",
                f"--service-account-signing-key-file={key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # No controller-manager runs, so nothing would make the default ServiceAccounts.
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                *self._audit_args(),
                "--v=0",
            ],
        )
        self._admin_token = token
        self._wait_ready(token, timeout)
        ca = (self.workdir / "certs" / "apiserver.crt").read_text()
        self._write_kubeconfig(token, ca)
        self._write_state()

    def _audit_args(self) -> list[str]:
        if self.audit_log is None:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",  # an event is on disk before its response is sent
            "--audit-log-maxsize=0",
        ]

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig that authenticates as `user` (one of `users`)."""
        path = self.workdir / f"kubeconfig-{user.replace(':', '-')}"
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": user, "user": {"token": self._tokens[user]}}]
        config["contexts"][0]["context"]["user"] = user
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)
        self._names[proc.pid] = name
        self._argv[name] = argv

    def restart_apiserver(self, graceful: bool = False, timeout: float = 120) -> None:
        """Stops kube-apiserver (SIGKILL, a crash; or SIGTERM, which drains its watches for up to a
        minute) and starts it again on the same port, certificates and tokens; etcd, and so every
        object, stays."""
        (proc,) = [p for p in self._procs if self._names[p.pid] == "kube-apiserver"]
        _end(proc, graceful, timeout=60)
        self._procs.remove(proc)
        self._spawn("kube-apiserver", self._argv["kube-apiserver"])
        self._wait_ready(self._admin_token, timeout)
        if (self.workdir / STATE_FILE).exists():  # `slipway dev down` stops the new process, not the old one
            self._write_state()

    def _write_state(self) -> None:
        state = State([p.pid for p in self._procs], self.port, str(self.kubeconfig))
        (self.workdir / STATE_FILE).write_text(json.dumps(asdict(state)))

    def _wait_ready(self, token: str, timeout: float) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # readiness only; clients verify against the CA below
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}/readyz", headers={"Authorization": f"Bearer {token}"}
        )
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"{self._names[proc.pid]} exited with {proc.returncode}; see {self.workdir}/*.log"
                    )
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError as error:
                last = str(error)
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s: {last}")

    def _write_kubeconfig(self, token: str, ca_pem: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "slipway",
                    "cluster": {
                        "server": f"https://127.0.0.1:{self.port}",
                        "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode(),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "slipway", "context": {"cluster": "slipway", "user": "admin"}}],
            "current-context": "slipway",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def stop(self) -> None:
        for proc in reversed(self._procs):  # apiserver first, then etcd
            if proc.poll() is None:
                _end(proc, graceful=True, timeout=15)
        self._procs.clear()
        (self.workdir / STATE_FILE).unlink(missing_ok=True)


def _end(proc: subprocess.Popen[bytes], graceful: bool, timeout: float) -> None:
    """SIGTERM (graceful) or SIGKILL, then SIGKILL if it outlives `timeout`."""
    if graceful:
        proc.terminate()
    else:
        proc.kill()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_recorded(workdir: Path) -> bool:
    """Stops a control plane whose state file is in workdir; False when none was running."""
    path = workdir / STATE_FILE
    if not path.exists():
        return False
    state = State(**json.loads(path.read_text()))
    for pid in reversed(state.pids):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    path.unlink(missing_ok=True)
    return True
