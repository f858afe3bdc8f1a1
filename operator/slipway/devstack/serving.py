"""The dev stack's node and Gateway: the pods KServe's Deployments make, run as local processes
behind a real nginx.

`python -m slipway.devstack.serving --kubeconfig=... --workdir=... [--env K=V]`

KServe's controller manager, kube-controller-manager and kube-scheduler (all real, started by the
stack) turn each InferenceService into a Deployment, a Service, HTTPRoutes and pods bound to the
node `devstack`. This process plays what is left, what a machine without containers cannot run:
- the node's kubelet (`kubelet`): every pod as a `python -m pipelines.predictor` process, with
  the container's args and env plus the stack's `--env` (the image's environment in a cluster);
- a Gateway (`gateway`): one nginx routing by Host header with each attached HTTPRoute's weights
  to the ready pods behind the Services it names, the routes' status written only once nginx
  serves their weights, and a deleted pod's process stopped only once nginx routes nothing to it.
Ready model servers are listed for Prometheus in `<workdir>/prometheus-targets.json`.

A restarted executor kills what its predecessor started (each process carries MARKER_ENV) and
runs the node's pods afresh, as a kubelet does after a reboot.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api.resources import HTTP_ROUTES
from ..controlplane.server import free_port
from . import sysdeps
from .gateway import (
    CONTROLLER_NAME,
    DEFAULT_HOST,
    Mirror,
    Nginx,
    Split,
    Target,
    attached_parents,
    render_config,
    route_mirror,
    route_split,
    route_status,
)
from .gateway import valid_hostname as _valid_host
from .kubelet import Kubelet
from .modelserver import READY, STARTING, UNREADY, alive, family, marked, signal_all, starttime
from .prometheus import TARGETS_FILE, ScrapeTarget, write_targets

log = logging.getLogger("slipway.devstack.serving")

PREDICTOR_MODULE = "pipelines.predictor"
GATEWAY_URL_FILE = "gateway-url"
STOP_GRACE = 10.0
ISVC_LABEL = "serving.kserve.io/inferenceservice"
MARKER_ENV = "SLIPWAY_SERVING_WORKDIR"  # inherited by every process an executor starts

# An HTTPRoute, its parentRefs naming our Gateway, and its unresolved backendRefs as (reason, message).
RouteResult = tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, str]]]


def endpoints(
    services: Iterable[dict[str, Any]], pods: Iterable[dict[str, Any]], addresses: Mapping[str, str]
) -> dict[tuple[str, str], list[Target]]:
    """Each Service's ready endpoints: the pods its selector picks that have a ready process."""
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        by_namespace.setdefault(pod["metadata"]["namespace"], []).append(pod)
    out: dict[tuple[str, str], list[Target]] = {}
    for service in services:
        meta = service["metadata"]
        selector = (service.get("spec") or {}).get("selector") or {}
        targets = []
        for pod in by_namespace.get(meta["namespace"], []) if selector else []:
            labels = pod["metadata"].get("labels") or {}
            address = addresses.get(pod["metadata"]["uid"])
            if address and all(labels.get(k) == v for k, v in selector.items()):
                port = int(address.rsplit(":", 1)[1])
                targets.append(Target(f"{meta['namespace']}.{pod['metadata']['name']}", port))
        out[(meta["namespace"], meta["name"])] = sorted(targets)
    return out


def routing(
    routes: Iterable[dict[str, Any]],
    backends: Mapping[tuple[str, str], list[Target]],
    gateway: tuple[str, str],
    mirrors: dict[str, Mirror] | None = None,
) -> tuple[dict[str, Split], list[RouteResult]]:
    """The gateway's table (host -> weighted targets), and each route's parents and unresolved refs;
    each host's RequestMirror goes into `mirrors` when given. Routes are taken oldest first: a host
    two routes claim stays the older one's."""
    table: dict[str, Split] = {}
    results: list[RouteResult] = []
    ordered = sorted(routes, key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["namespace"]))
    for route in ordered:
        parents = attached_parents(route, *gateway)
        if not parents or route["metadata"].get("deletionTimestamp"):
            ours = [
                p for p in (route.get("status") or {}).get("parents", []) if p.get("controllerName") == CONTROLLER_NAME
            ]
            if ours:  # detached from our Gateway: take our entries out of its status
                results.append((route, [], []))
            continue
        split, unresolved = route_split(route, backends)
        mirror, mirror_unresolved = route_mirror(route, backends)
        unresolved += mirror_unresolved
        hosts = [h.lower() for h in route.get("spec", {}).get("hostnames") or []] or [DEFAULT_HOST]
        for host in hosts:
            if host in table:
                continue
            if host == DEFAULT_HOST or _valid_host(host):
                table[host] = split
                if mirror is not None and mirrors is not None:
                    mirrors[host] = mirror
            else:
                unresolved.append(("UnsupportedValue", f"hostname {host!r} is not a valid DNS name"))
        results.append((route, parents, unresolved))
    return table, results


class Executor:
    def __init__(
        self,
        api: client.ApiClient,
        workdir: Path,
        extra_env: Mapping[str, str],
        gateway: str = "slipway-system/slipway-gateway",
        gateway_port: int | None = None,
        module: str = PREDICTOR_MODULE,
        nginx_binary: Path | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.workdir = workdir
        self.folder = workdir / "serving"
        namespace, _, name = gateway.rpartition("/")
        self.gateway = (namespace or "slipway-system", name)
        self.kubelet = Kubelet(self.core, self.folder, module, extra_env)
        self.gateway_port = gateway_port
        self.nginx = Nginx(nginx_binary or sysdeps.nginx(), self.folder / "gateway", gateway_port or 0)

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "gateway").mkdir(exist_ok=True)
        self._kill_leftovers()
        # The last run's port when free, so clients keep their URL across restarts.
        previous = _previous_port(self.workdir / GATEWAY_URL_FILE)
        port = self.gateway_port or (previous if previous and _bindable(previous) else free_port())
        self.nginx = Nginx(self.nginx.binary, self.nginx.folder, port)
        self.nginx.start(render_config({}, self.nginx.settings))
        write_targets(self.workdir / TARGETS_FILE, [])
        self.kubelet.register()
        (self.workdir / GATEWAY_URL_FILE).write_text(self.nginx.url + "\n")
        log.info("gateway on %s", self.nginx.url)

    def stop(self) -> None:
        """Each server and what it started (Ray's processes) get the grace period, then SIGKILL."""
        servers = list(self.kubelet.servers.values())
        for server in servers:
            server.terminate()
        for deadline in (time.monotonic() + STOP_GRACE, time.monotonic() + 2 * STOP_GRACE):
            while not all(server.gone() for server in servers) and time.monotonic() < deadline:
                time.sleep(0.1)
            for server in servers:
                server.kill()
        self.nginx.stop()
        write_targets(self.workdir / TARGETS_FILE, [])

    def _kill_leftovers(self) -> None:
        """Kills what an earlier executor of this workdir left running, after a SIGKILL: every
        process started under an executor (the model servers, Ray's) inherits MARKER_ENV."""
        marker = str(self.workdir)
        for pid in marked(MARKER_ENV, marker):
            if "slipway.devstack.serving" in " ".join(_cmdline(pid)):
                raise RuntimeError(f"another serving executor (pid {pid}) runs in {self.workdir}")
        os.environ[MARKER_ENV] = marker
        left = {(pid, starttime(pid) or "") for pid in marked(MARKER_ENV, marker)}
        # nginx overwrites its environment (its process titles take the space): found by its pid file.
        with contextlib.suppress(OSError, ValueError):
            master = int((self.nginx.folder / "nginx.pid").read_text())
            if "nginx" in " ".join(_cmdline(master)):
                left |= family(master)
        if left:
            log.info("stopping %d processes left over by an earlier executor", len(left))
        signal_all(left, signal.SIGKILL)
        # Gone means its ports are free again (a zombie holds none): the gateway reuses its port.
        deadline = time.monotonic() + 10
        while any(alive(pid, started) for pid, started in left):
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes left over by an earlier executor did not die: {left}")
            time.sleep(0.05)

    # --- one pass ---------------------------------------------------------------------------

    def step(self) -> None:
        now = time.monotonic()
        pods = self.kubelet.pods()
        self.kubelet.sync(pods, now)
        services = self.core.api_client.sanitize_for_serialization(self.core.list_service_for_all_namespaces().items)
        routes: Any = self.custom.list_cluster_custom_object(HTTP_ROUTES.group, HTTP_ROUTES.version, HTTP_ROUTES.plural)
        backends = endpoints(services, pods, self.kubelet.addresses(pods))
        mirrors: dict[str, Mirror] = {}
        table, results = routing(routes["items"], backends, self.gateway, mirrors)
        if self.nginx.apply(render_config(table, self.nginx.settings, mirrors)):
            # nginx routes nothing to a deleted pod now: its process may stop.
            self.kubelet.finish(pods)
            for route, parents, unresolved in results:
                self._write_route_status(route, route_status(route, parents, unresolved, datetime.now(UTC)))
        self.kubelet.kill_overdue(STOP_GRACE, now)
        # Listed from start-up, not from readiness: Prometheus finds a new target only every few
        # seconds, and the candidate's first analysis window must already have samples.
        metas = {p["metadata"]["uid"]: p["metadata"] for p in pods}
        targets = [
            ScrapeTarget(
                server.address, meta["namespace"], (meta.get("labels") or {}).get(ISVC_LABEL, ""), meta["name"]
            )
            for uid, server in self.kubelet.servers.items()
            if (meta := metas.get(uid)) and server.state in (STARTING, READY, UNREADY) and server.terminated_at is None
        ]
        write_targets(self.workdir / TARGETS_FILE, targets)

    def _write_route_status(self, route: dict[str, Any], status: dict[str, Any]) -> None:
        """Replaces the status when it changed; a conflict (the route moved on) waits for the next pass."""
        if route.get("status") == status:
            return
        meta = route["metadata"]
        body = {**route, "status": status}
        try:
            self.custom.replace_namespaced_custom_object_status(
                HTTP_ROUTES.group, HTTP_ROUTES.version, meta["namespace"], HTTP_ROUTES.plural, meta["name"], body
            )
        except ApiException as error:
            if error.status not in (404, 409):
                raise


def _cmdline(pid: int) -> list[str]:
    try:
        return list(psutil.Process(pid).cmdline())
    except psutil.Error:
        return []


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _previous_port(path: Path) -> int | None:
    """The gateway's port from an earlier run, so clients keep their URL across restarts."""
    try:
        return int(path.read_text().strip().rsplit(":", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True, help="logs, gateway, targets file and pid file")
    parser.add_argument("--gateway", default="slipway-system/slipway-gateway", help="the Gateway routes attach to")
    parser.add_argument("--gateway-port", type=int, default=None, help="default: the last run's, else a free one")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE added to every model server")
    parser.add_argument("--predictor-module", default=PREDICTOR_MODULE)
    parser.add_argument("--interval", type=float, default=0.3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SLIPWAY_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    api = config.new_client_from_config(str(args.kubeconfig))  # type: ignore[no-untyped-call]
    extra = dict(item.split("=", 1) for item in args.env)
    executor = Executor(
        api,
        args.workdir.resolve(),
        extra,
        gateway=args.gateway,
        gateway_port=args.gateway_port,
        module=args.predictor_module,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    executor.start()
    try:
        while not stop.is_set():
            try:
                executor.step()
            except ApiException as error:  # the API server restarting, say: try again next pass
                log.warning("API error: %s %s", error.status, error.reason)
            stop.wait(args.interval)
    finally:
        executor.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
