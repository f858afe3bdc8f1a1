"""The dev stack's Gateway: one real nginx routing by Host header, weighted as the routes say.

The serving executor computes a routing table (host -> weighted targets) from the HTTPRoutes
attached to the Gateway and the ready pods behind each Service they name; `render_config` turns
it into an nginx configuration (`split_clients` on `$request_id` for weighted splits, weight 0 =
no traffic, unknown Host -> 404) and `Nginx` runs the real proxy and reloads it gracefully. A
route's RequestMirror filter (the shadow stage) becomes nginx's `mirror`: a background subrequest
whose answer is discarded, sent for the filter's percent of requests (`split_clients` again). A
reload counts as done only when the new workers answer with the new configuration's version, so
route status (the operator's signal that weights are in effect) is never written early.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("slipway.devstack.gateway")

CONTROLLER_NAME = "slipway.dev/devstack-gateway"
GATEWAY_GROUP = "gateway.networking.k8s.io"
VERSION_PATH = "/.slipway/config"
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_UPSTREAM = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True, order=True)
class Target:
    """Where a share of a host's traffic goes: a local model server, or an HTTP error status."""

    upstream: str = ""  # <namespace>.<pod>, e.g. "ml.churn-v2-predictor-7d9f8-x2x4q"; empty for an error
    port: int = 0
    status: int = 0  # 500: invalid backend, 503: backend not ready; 0: proxy to the port

    @classmethod
    def error(cls, status: int) -> Target:
        return cls(status=status)

    @property
    def key(self) -> str:
        """The value `split_clients` yields for this target."""
        return f"status-{self.status}" if self.status else self.upstream


Split = Sequence[tuple[Target, float]]


@dataclass(frozen=True)
class Mirror:
    """A host's RequestMirror: the mirror backend's targets (weights shared by its endpoints, or an
    error status where it has none ready) and the percent of requests copied to it."""

    split: Split
    percent: float

    def shares(self) -> list[tuple[Target, str]]:
        """`split_clients` values: a target for `percent` of requests, `status-204` (no copy) for the rest."""
        total = sum(w for _, w in self.split if w > 0)
        scaled = [(t, w * self.percent / total) for t, w in self.split if w > 0] if total else []
        return shares([*scaled, (Target.error(NO_MIRROR), 100 - sum(w for _, w in scaled))])


MIRROR_PATH = "/.slipway/mirror"
# nginx reads a kept-alive connection's next request only once the mirror subrequest of the last
# one is done, which would add the candidate's latency to the users' next request: a host with a
# mirror closes each connection after its answer instead (the answer itself never waits).
MIRRORING = (
    f"            mirror {MIRROR_PATH};",
    "            mirror_request_body on;",
    "            keepalive_timeout 0;",
)
NO_MIRROR = 204  # what the mirror location answers (to nobody) for a request not copied
# A mirrored answer is discarded, but nginx finishes the client's request (and reads the next one
# on a kept-alive connection) only once the copy is done: a slow candidate is given up on early.
MIRROR_TIMEOUTS = ("proxy_connect_timeout 1s;", "proxy_send_timeout 5s;", "proxy_read_timeout 5s;")
DEFAULT_HOST = ""  # a route without hostnames answers every Host no other route claims


def valid_hostname(host: str) -> bool:
    return len(host) <= 253 and bool(_HOSTNAME.match(host))


def shares(split: Split) -> list[tuple[Target, str]]:
    """Percentages for `split_clients` (two decimals at most, the last one `*`); weight 0 drops out."""
    merged: dict[Target, float] = {}
    for target, weight in split:
        if weight > 0:
            merged[target] = merged.get(target, 0.0) + weight
    total = sum(merged.values())
    ordered = sorted(merged.items())
    out: list[tuple[Target, str]] = []
    for index, (target, weight) in enumerate(ordered):
        if index == len(ordered) - 1:
            out.append((target, "*"))
            break
        hundredths = int(weight * 10000 / total)  # floored, so the sum never passes 100%
        if hundredths > 0:
            out.append((target, f"{hundredths // 100}.{hundredths % 100:02d}%"))
    return out


@dataclass(frozen=True)
class Settings:
    """Where this nginx lives and listens."""

    folder: Path
    port: int
    run_as: str = ""  # the `user` directive; only meaningful when nginx starts as root


def render_config(table: Mapping[str, Split], settings: Settings, mirrors: Mapping[str, Mirror] | None = None) -> str:
    """The whole nginx configuration for a routing table (host -> weighted targets) and the hosts'
    mirrors (host -> Mirror)."""
    hosts = sorted(table)
    mirrors = {host: mirror for host, mirror in (mirrors or {}).items() if host in table}
    splits = [*table.values(), *(m.split for m in mirrors.values())]
    upstreams = sorted(
        {(t.upstream, t.port) for split in splits for t, w in split if w > 0 and not t.status and t.port}
    )
    folder = settings.folder
    listen = f"127.0.0.1:{settings.port}"
    lines = [
        *([f"user {settings.run_as};"] if settings.run_as else []),
        "worker_processes 1;",
        "daemon off;",
        f"pid {folder / 'nginx.pid'};",
        f"error_log {folder / 'error.log'} notice;",
        "events { worker_connections 1024; }",
        "http {",
        "    server_names_hash_bucket_size 256;",
        "    server_names_hash_max_size 4096;",
        "    log_format gateway '$time_iso8601 $host \"$request\" $status $upstream_addr $request_time';",
        f"    access_log {folder / 'access.log'} gateway;",
        *(f"    {kind}_temp_path {folder / 'tmp' / kind};" for kind in ("client_body", "proxy")),
        *(f"    {kind}_temp_path {folder / 'tmp' / kind};" for kind in ("fastcgi", "uwsgi", "scgi")),
        "    default_type text/plain;",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',
        "    proxy_set_header Host $http_host;",
        "    proxy_set_header X-Request-Id $request_id;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    ]
    for name, port in upstreams:
        if not _UPSTREAM.match(name):
            raise ValueError(f"not a valid upstream name: {name!r}")
        lines += [f"    upstream {name} {{ server 127.0.0.1:{port}; keepalive 8; }}"]
    default_location = ['        return 404 "no route for host $host\\n";']
    default_mirror: list[str] = []
    servers: list[str] = []
    for index, host in enumerate(hosts):
        location = _location(f"$slipway_split_{index}", shares(table[host]), lines)
        mirror = _mirror(f"$slipway_mirror_{index}", mirrors[host], lines) if host in mirrors else []
        if mirror:
            location = [*MIRRORING, *location]
        if host == DEFAULT_HOST:
            default_location, default_mirror = location, mirror
            continue
        if not valid_hostname(host):
            raise ValueError(f"not a valid hostname: {host!r}")
        servers += [
            "    server {",
            f"        listen {listen};",
            f"        server_name {host};",
            "        location / {",
            *location,
            "        }",
            *mirror,
            "    }",
        ]
    body = "\n".join(
        [
            *lines,
            "    server {",
            f"        listen {listen} default_server;",
            "        server_name _;",
            f'        location = {VERSION_PATH} {{ return 200 "@VERSION@\\n"; }}',
            "        location / {",
            *default_location,
            "        }",
            *default_mirror,
            "    }",
            *servers,
            "}",
            "",
        ]
    )
    version = hashlib.sha256(body.encode()).hexdigest()[:16]
    return f"# slipway-config-version: {version}\n" + body.replace("@VERSION@", version)


def _location(variable: str, split: list[tuple[Target, str]], http: list[str]) -> list[str]:
    """The body of `location /` for one host; adds a `split_clients` block to `http` when needed."""
    if not split:  # no backend with a weight above 0
        return ['            return 500 "no backend receives traffic for this route\\n";']
    if len(split) == 1:
        ((target, _),) = split
        return _proxy(target.key, target)
    http += [f'    split_clients "${{request_id}}" {variable} {{']
    http += [f"        {percent} {target.key};" for target, percent in split]
    http += ["    }"]
    body: list[str] = []
    for status in sorted({t.status for t, _ in split if t.status}):
        body += [f'            if ({variable} = "status-{status}") {{ return {status}; }}']
    body += [f"            proxy_pass http://{variable};"]
    body += [f"            add_header X-Slipway-Upstream {variable} always;"]
    return body


def _mirror(variable: str, mirror: Mirror, http: list[str]) -> list[str]:
    """The internal location a host's `mirror` subrequest goes to (a `split_clients` block added to
    `http` picks whether, and where, to copy). Its answer goes nowhere: the client's answer is the
    main request's alone. A different hash key from the main split's: which requests are copied
    does not depend on where they are routed."""
    split = mirror.shares()
    http += [f'    split_clients "mirror${{request_id}}" {variable} {{']
    http += [f"        {percent} {target.key};" for target, percent in split]
    http += ["    }"]
    body = [f"        location = {MIRROR_PATH} {{", "            internal;"]
    for status in sorted({t.status for t, _ in split if t.status}):
        body += [f'            if ({variable} = "status-{status}") {{ return {status}; }}']
    body += [f"            {directive}" for directive in MIRROR_TIMEOUTS]
    body += [f"            proxy_pass http://{variable}$request_uri;", "        }"]
    return body


def _proxy(upstream: str, target: Target) -> list[str]:
    if target.status:
        return [f"            return {target.status};"]
    return [
        f"            proxy_pass http://{upstream};",
        f"            add_header X-Slipway-Upstream {upstream} always;",
    ]


def config_version(config: str) -> str:
    match = re.match(r"# slipway-config-version: (\w+)", config)
    if not match:
        raise ValueError("not a configuration from render_config")
    return match.group(1)


# --- HTTPRoute status, as a Gateway controller writes it -----------------------------------


def condition(
    kind: str, ok: bool, reason: str, message: str, generation: int, previous: Sequence[Mapping[str, Any]], now: str
) -> dict[str, Any]:
    status = "True" if ok else "False"
    since = next(
        (c.get("lastTransitionTime") for c in previous if c.get("type") == kind and c.get("status") == status), None
    )
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since or now,
    }


def route_status(
    route: Mapping[str, Any],
    parent_refs: Sequence[Mapping[str, Any]],
    unresolved: Sequence[tuple[str, str]],
    now: datetime,
    controller: str = CONTROLLER_NAME,
) -> dict[str, Any]:
    """The route's status with our parents' entries replaced; other controllers' entries kept.

    `unresolved` holds (reason, message) per backendRef that could not be resolved.
    """
    generation = int(route["metadata"].get("generation", 1))
    stamp = now.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    existing = list((route.get("status") or {}).get("parents", []))
    others = [p for p in existing if p.get("controllerName") != controller]
    ours: list[dict[str, Any]] = []
    for ref in parent_refs:
        before: list[dict[str, Any]] = next(
            (
                p.get("conditions", [])
                for p in existing
                if p.get("controllerName") == controller and p.get("parentRef") == ref
            ),
            [],
        )
        resolved = not unresolved
        reason = "ResolvedRefs" if resolved else unresolved[0][0]
        message = "all backend references resolved" if resolved else "; ".join(m for _, m in unresolved)
        ours.append(
            {
                "parentRef": dict(ref),
                "controllerName": controller,
                "conditions": [
                    condition("Accepted", True, "Accepted", "route accepted and in effect", generation, before, stamp),
                    condition("ResolvedRefs", resolved, reason, message, generation, before, stamp),
                ],
            }
        )
    return {**(route.get("status") or {}), "parents": [*others, *ours]}


def route_split(
    route: Mapping[str, Any], backends: Mapping[tuple[str, str], Sequence[Target]]
) -> tuple[list[tuple[Target, float]], list[tuple[str, str]]]:
    """The route's weighted targets and its unresolved backendRefs as (reason, message).

    `backends` maps each Service (namespace, name) to its ready endpoints, as a Gateway reads them;
    a backend's weight is shared evenly by its endpoints, and one with none answers 503. Every
    rule's backendRefs count (matches are not interpreted). An unresolvable backend keeps its share
    and answers 500, as the Gateway API asks.
    """
    namespace = route["metadata"]["namespace"]
    split: list[tuple[Target, float]] = []
    unresolved: list[tuple[str, str]] = []
    for rule in route.get("spec", {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            weight = float(ref.get("weight", 1))
            endpoints, problem = resolve(ref, namespace, backends)
            if problem:
                unresolved.append(problem)
                split.append((Target.error(500), weight))
            else:
                split += [(t, weight / len(endpoints)) for t in endpoints] or [(Target.error(503), weight)]
    return split, unresolved


def resolve(
    ref: Mapping[str, Any],
    namespace: str,
    backends: Mapping[tuple[str, str], Sequence[Target]],
    what: str = "backendRef",
) -> tuple[Sequence[Target], tuple[str, str] | None]:
    """A backendRef's ready endpoints, or why it cannot be resolved (reason, message)."""
    name = str(ref.get("name", ""))
    if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
        return [], ("InvalidKind", f"{what} {name}: only core Services are supported")
    if ref.get("namespace", namespace) != namespace:
        return [], ("RefNotPermitted", f"{what} {name}: no ReferenceGrant allows another namespace")
    if (namespace, name) not in backends:
        return [], ("BackendNotFound", f"{what} {name}: no Service {name} in {namespace}")
    return backends[(namespace, name)], None


def route_mirror(
    route: Mapping[str, Any], backends: Mapping[tuple[str, str], Sequence[Target]]
) -> tuple[Mirror | None, list[tuple[str, str]]]:
    """The route's RequestMirror filter as a Mirror, and its backendRef if unresolved (reason, message).

    One mirror per route (the first filter), as the Gateway API lets an implementation do; an
    unresolvable mirror backend is not configured and makes ResolvedRefs False.
    """
    namespace = route["metadata"]["namespace"]
    filters = [f for r in route.get("spec", {}).get("rules") or [] for f in r.get("filters") or []]
    found = next(
        (f["requestMirror"] for f in filters if f.get("type") == "RequestMirror" and f.get("requestMirror")), None
    )
    if found is None:
        return None, []
    endpoints, problem = resolve(found.get("backendRef") or {}, namespace, backends, "mirror backendRef")
    if problem:
        return None, [problem]
    fraction = found.get("fraction")
    if fraction is not None:
        percent = 100.0 * int(fraction.get("numerator", 0)) / max(int(fraction.get("denominator", 100)), 1)
    else:
        percent = float(found.get("percent", 100))
    split = [(t, 1.0) for t in endpoints] or [(Target.error(503), 1.0)]
    return Mirror(split, percent), []


def attached_parents(route: Mapping[str, Any], gateway_namespace: str, gateway_name: str) -> list[dict[str, Any]]:
    """The route's parentRefs that name our Gateway (namespace defaults to the route's)."""
    namespace = route["metadata"]["namespace"]
    return [
        dict(ref)
        for ref in route.get("spec", {}).get("parentRefs") or []
        if ref.get("name") == gateway_name
        and ref.get("namespace", namespace) == gateway_namespace
        and ref.get("kind", "Gateway") == "Gateway"
        and ref.get("group", GATEWAY_GROUP) == GATEWAY_GROUP
    ]


# --- the nginx process -----------------------------------------------------------------------


class Nginx:
    """nginx (master + one worker) as a child process, in its own folder, on one local port."""

    def __init__(self, binary: Path, folder: Path, port: int) -> None:
        self.binary = binary
        self.folder = folder
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.applied = ""  # the configuration nginx is known to serve
        euid = os.geteuid()
        self.settings = Settings(folder, port, pwd.getpwuid(euid).pw_name if euid == 0 else "")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.folder / "nginx.conf"

    def _command(self, conf: Path, *extra: str) -> list[str]:
        return [
            str(self.binary),
            "-p",
            f"{self.folder}/",
            "-c",
            str(conf),
            "-e",
            str(self.folder / "error.log"),
            *extra,
        ]

    def start(self, config: str, timeout: float = 30) -> None:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.folder / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        self._check(config)
        self.conf.write_text(config)
        out = open(self.folder / "nginx.out", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self._command(self.conf), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._await(config_version(config), timeout)
        self.applied = config

    def apply(self, config: str, timeout: float = 30) -> bool:
        """Loads `config` gracefully (SIGHUP) and returns once the new workers serve it."""
        if config == self.applied:
            return True
        if not self.proc or self.proc.poll() is not None:
            raise RuntimeError(f"nginx is not running; see {self.folder / 'error.log'}")
        try:
            self._check(config)
        except RuntimeError:
            log.exception("refusing a configuration nginx does not accept")
            return False
        self.conf.write_text(config)
        old_workers = self._workers()
        self.proc.send_signal(signal.SIGHUP)
        self._await(config_version(config), timeout, old_workers)
        self.applied = config
        return True

    def _check(self, config: str) -> None:
        candidate = self.folder / "nginx.conf.new"
        candidate.write_text(config)
        result = subprocess.run(self._command(candidate, "-t", "-q"), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"nginx -t: {result.stderr.strip()}")

    def _await(self, version: str, timeout: float, old_workers: frozenset[int] = frozenset()) -> None:
        """Until fresh connections get the new version and every worker from before the reload has exited."""
        deadline = time.monotonic() + timeout
        streak = 0
        while streak < 3:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited; see {self.folder / 'error.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx did not serve configuration {version} within {timeout}s")
            streak = streak + 1 if self.served_version() == version else 0
            if streak == 0:
                time.sleep(0.05)
        # Until the old workers have exited: one still finishing its connections, or one that has
        # not yet had the master's signal to stop, may accept a fresh connection and route it by the
        # old weights. Known by pid from before the reload: their title changes too late to tell.
        while old_workers & self._workers():
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx's old workers did not exit within {timeout}s")
            time.sleep(0.05)

    def _workers(self) -> frozenset[int]:
        """The pids of this master's children (its workers); a zombie has stopped accepting."""
        if self.proc is None:
            return frozenset()
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.proc.pid).children()
            return frozenset(c.pid for c in children if _status(c) not in (None, psutil.STATUS_ZOMBIE))
        return frozenset()

    def served_version(self) -> str | None:
        try:
            with urllib.request.urlopen(self.url + VERSION_PATH, timeout=2) as response:
                return str(response.read().decode().strip())
        except (urllib.error.URLError, OSError):
            return None

    def stop(self, timeout: float = 10) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish in-flight requests
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _status(process: psutil.Process) -> str | None:
    try:
        return str(process.status())
    except psutil.Error:  # gone meanwhile
        return None
