"""The dev stack's stand-in for KServe and a Gateway: real model servers behind a real nginx.

`python -m slipway.devstack.serving --kubeconfig=... --workdir=... [--domain=example.com] [--env K=V]`

Every InferenceService runs as `python -m pipelines.predictor` processes, one per revision (see
`kserve`), with the container's args and env plus the stack's `--env` (the image's environment in
a cluster). A new revision starts beside the old one, traffic switches when it answers
readiness, then the old one stops. One nginx (see `gateway`) routes by Host header: each
InferenceService's `<isvc>.<ns>.<domain>`, and each HTTPRoute attached to our Gateway, with its
weights. Status is written as KServe and a Gateway write it, only when it changed; route
status only once nginx serves the route's weights. Ready model servers are listed for
Prometheus in `<workdir>/prometheus-targets.json`.

A restarted executor adopts nothing: it kills what its predecessor started (pid file in
`<workdir>/serving/`) and rebuilds from the objects, their status, and the revision specs it
keeps in `<workdir>/serving/revisions.json` (Knative keeps those in Revision objects).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api.resources import HTTP_ROUTES, INFERENCE_SERVICES, Resource
from ..controlplane.server import free_port
from . import kserve, sysdeps
from .gateway import (
    CONTROLLER_NAME,
    DEFAULT_HOST,
    Nginx,
    Split,
    Target,
    attached_parents,
    render_config,
    route_split,
    route_status,
)
from .gateway import valid_hostname as _valid_host
from .modelserver import ModelServer, RevisionSpec, alive, family, signal_all, starttime
from .prometheus import TARGETS_FILE, ScrapeTarget, write_targets

log = logging.getLogger("slipway.devstack.serving")

PREDICTOR_MODULE = "pipelines.predictor"
GATEWAY_URL_FILE = "gateway-url"
STOP_GRACE = 10.0


# An HTTPRoute, its parentRefs naming our Gateway, and its unresolved backendRefs as (reason, message).
RouteResult = tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, str]]]


@dataclass
class Service:
    """One InferenceService as this executor tracks it."""

    namespace: str
    name: str
    uid: str
    revisions: dict[str, RevisionSpec] = field(default_factory=dict)
    servers: dict[str, ModelServer] = field(default_factory=dict)
    rollout: kserve.Rollout = field(default_factory=kserve.Rollout)
    traffic: list[kserve.TrafficTarget] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def needed(self) -> set[str]:
        """Revisions that must run: the latest, and whatever takes traffic meanwhile."""
        names = {t.revision for t in self.traffic if t.percent > 0}
        if self.rollout.created:
            names.add(self.rollout.created)
        return names & set(self.revisions)

    def split(self) -> list[tuple[Target, float]]:
        out: list[tuple[Target, float]] = []
        for t in self.traffic:
            server = self.servers.get(t.revision)
            if t.percent <= 0:
                continue
            ready = server is not None and server.state == kserve.READY
            out.append((Target(server.upstream, server.port) if server and ready else Target.error(503), t.percent))
        return out


class Executor:
    def __init__(
        self,
        custom: client.CustomObjectsApi,
        workdir: Path,
        extra_env: Mapping[str, str],
        domain: str = "example.com",
        gateway: str = "slipway-system/slipway-gateway",
        gateway_port: int | None = None,
        module: str = PREDICTOR_MODULE,
        nginx_binary: Path | None = None,
        namespaces: Sequence[str] = (),
    ) -> None:
        self.custom = custom
        self.workdir = workdir
        self.folder = workdir / "serving"
        self.extra_env = dict(extra_env)
        self.domain = domain
        self.gateway_namespace, _, self.gateway_name = gateway.rpartition("/")
        self.gateway_namespace = self.gateway_namespace or "slipway-system"
        self.module = module
        self.namespaces = list(namespaces)  # empty: every namespace
        self.services: dict[str, Service] = {}
        self._refused: dict[str, str] = {}  # uid -> the message logged
        self.stopping: list[tuple[ModelServer, float]] = []
        self.store_path = self.folder / "revisions.json"
        self.pid_path = self.folder / "pids.json"
        self._pids_written: list[list[Any]] = []
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
        self._write_pids()
        write_targets(self.workdir / TARGETS_FILE, [])
        (self.workdir / GATEWAY_URL_FILE).write_text(self.nginx.url + "\n")
        log.info("gateway on %s", self.nginx.url)

    def stop(self) -> None:
        servers = [s for svc in self.services.values() for s in svc.servers.values()]
        servers += [s for s, _ in self.stopping]
        for server in servers:
            server.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for server in servers:
            # Each server and what it started (Ray's processes) get the grace period, then SIGKILL.
            while not server.gone() and time.monotonic() < deadline:
                time.sleep(0.1)
            server.kill()
        for server in servers:
            while not server.gone() and time.monotonic() < deadline + STOP_GRACE:
                time.sleep(0.05)
        self.nginx.stop()
        write_targets(self.workdir / TARGETS_FILE, [])
        self.pid_path.unlink(missing_ok=True)

    def _kill_leftovers(self) -> None:
        if not self.pid_path.exists():
            return
        recorded = json.loads(self.pid_path.read_text())
        owner = recorded.get("executor")
        if owner and owner[0] != os.getpid() and starttime(owner[0]) == owner[1]:
            raise RuntimeError(f"another serving executor (pid {owner[0]}) runs in {self.workdir}")
        killed: set[tuple[int, str]] = set()
        for pid, started in recorded.get("children", []):
            if starttime(pid) == started:
                log.info("stopping pid %d, left over by an earlier executor, and what it started", pid)
                processes = family(pid)  # each child leads its own session (Ray's processes in it too)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                signal_all(processes, signal.SIGKILL)
                killed |= processes | {(pid, started)}
        # Gone means its ports are free again (a zombie holds none): the gateway reuses its port.
        deadline = time.monotonic() + 10
        while any(alive(pid, started) for pid, started in killed):
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes left over by an earlier executor did not die: {killed}")
            time.sleep(0.05)
        self.pid_path.unlink()

    def _write_pids(self) -> None:
        procs = [self.nginx.proc] + [s.proc for svc in self.services.values() for s in svc.servers.values()]
        procs += [s.proc for s, _ in self.stopping]
        children = sorted([p.pid, starttime(p.pid)] for p in procs if p is not None and p.poll() is None)
        if children == self._pids_written and self.pid_path.exists():
            return
        me = [os.getpid(), starttime(os.getpid())]
        partial = self.pid_path.with_suffix(".partial")
        partial.write_text(json.dumps({"executor": me, "children": children}))
        partial.replace(self.pid_path)
        self._pids_written = children

    # --- one pass ---------------------------------------------------------------------------

    def step(self) -> None:
        isvcs = self._list(INFERENCE_SERVICES.group, INFERENCE_SERVICES.version, INFERENCE_SERVICES.plural)
        routes = self._list(HTTP_ROUTES.group, HTTP_ROUTES.version, HTTP_ROUTES.plural)
        now = time.monotonic()
        live: dict[str, dict[str, Any]] = {}
        seen: set[str] = set()
        for isvc in isvcs:
            meta = isvc["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            if meta.get("deletionTimestamp"):
                continue
            seen.add(key)
            try:
                self._sync(isvc, now)
                live[key] = isvc
            except Exception as error:  # one bad object must not stop the others
                self._refuse(isvc, error)
        for key in set(self.services) - seen:
            self._drop(self.services.pop(key))

        table, route_results = self._routing(live, routes)
        applied = self.nginx.apply(render_config(table, self.nginx.settings))
        if applied:
            for svc in self.services.values():
                for name in set(svc.servers) - svc.needed():
                    self._retire(svc.servers.pop(name))
            for route, parents, unresolved in route_results:
                self._write_status(HTTP_ROUTES, route, route_status(route, parents, unresolved, datetime.now(UTC)))
        for key, isvc in live.items():
            self._write_isvc_status(self.services[key], isvc, applied)
        self._reap(now)
        targets = [
            ScrapeTarget(s.address, svc.namespace, svc.name, name)
            for svc in self.services.values()
            for name, s in svc.servers.items()
            # Listed from start-up, not from readiness: Prometheus finds a new target only every
            # few seconds, and the candidate's first analysis window must already have samples.
            if s.state in (kserve.STARTING, kserve.READY, kserve.UNREADY)
        ]
        write_targets(self.workdir / TARGETS_FILE, targets)
        self._save_store()
        self._write_pids()

    def _sync(self, isvc: dict[str, Any], now: float) -> None:
        meta = isvc["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        svc = self.services.get(key)
        if svc is not None and svc.uid != meta["uid"]:  # deleted and made again under the same name
            self._drop(self.services.pop(key))
            svc = None
        if svc is None:
            svc = self.services[key] = self._adopt(isvc)
        predictor = isvc["spec"]["predictor"]
        mode = kserve.deployment_mode(isvc)
        template = kserve.template_hash(predictor, mode)
        latest = svc.revisions.get(svc.rollout.created or "")
        if latest is None or latest.template != template:
            name = kserve.next_revision(meta["name"], svc.rollout)
            if name in svc.servers:  # same name, other template: only after a restart without records
                self._retire(svc.servers.pop(name))
            svc.revisions[name] = RevisionSpec(name, template, kserve.predictor_container(predictor))
            svc.rollout = kserve.Rollout(name, svc.rollout.ready, svc.rollout.rolled_out, svc.rollout.previous)
            log.info("%s: new revision %s", key, name)
        for server in svc.servers.values():
            server.check(now)
        created = svc.servers.get(svc.rollout.created or "")
        if created is not None and created.state == kserve.READY and svc.rollout.ready != svc.rollout.created:
            svc.rollout = kserve.Rollout(
                svc.rollout.created, svc.rollout.created, svc.rollout.rolled_out, svc.rollout.previous
            )
        svc.rollout, svc.traffic = kserve.settle(mode, kserve.canary_percent(isvc), svc.rollout)
        for name in sorted(svc.needed() - set(svc.servers)):
            server = ModelServer(
                svc.revisions[name], svc.namespace, self.module, self.extra_env, self.folder / svc.namespace
            )
            server.start()
            svc.servers[name] = server
        self._write_pids()  # at once: a restart after a SIGKILL must find every process we started
        keep = {n for n in (svc.rollout.created, svc.rollout.ready, svc.rollout.rolled_out, svc.rollout.previous) if n}
        svc.revisions = {n: spec for n, spec in svc.revisions.items() if n in keep or n in svc.servers}

    def _refuse(self, isvc: dict[str, Any], error: Exception) -> None:
        """A spec this stand-in cannot run (KServe's webhook would refuse it): Ready=False, logged once."""
        meta = isvc["metadata"]
        message = f"spec.predictor cannot run: {error}"
        if self._refused.get(meta["uid"]) != message:
            log.exception("InferenceService %s/%s", meta["namespace"], meta["name"])
            self._refused[meta["uid"]] = message
        missing = kserve.RevisionState(kserve.MISSING, message)
        status = kserve.isvc_status(isvc, self.domain, kserve.Rollout(), [], missing, None, False, datetime.now(UTC))
        with contextlib.suppress(ApiException):
            self._write_status(INFERENCE_SERVICES, isvc, status)

    def _adopt(self, isvc: dict[str, Any]) -> Service:
        """Rebuilds what an earlier executor knew from the object's status and the revision records."""
        meta = isvc["metadata"]
        svc = Service(meta["namespace"], meta["name"], meta["uid"])
        record = self._load_store().get(svc.key) or {}
        if record.get("uid") == svc.uid:
            svc.revisions = {
                name: RevisionSpec(name, spec["template"], spec["container"])
                for name, spec in record["revisions"].items()
            }
        svc.rollout = kserve.Rollout.from_status(isvc.get("status")).known(set(svc.revisions))
        return svc

    def _drop(self, svc: Service) -> None:
        log.info("%s is gone: stopping its revisions", svc.key)
        for server in svc.servers.values():
            self._retire(server)

    def _retire(self, server: ModelServer) -> None:
        server.terminate()
        self.stopping.append((server, time.monotonic() + STOP_GRACE))

    def _reap(self, now: float) -> None:
        still: list[tuple[ModelServer, float]] = []
        for server, deadline in self.stopping:
            if now > deadline and not server.gone():
                server.kill()  # the server and whatever it started that outlived it
            if server.gone():
                server.release()
            else:
                still.append((server, deadline))
        self.stopping = still

    # --- routing and status -----------------------------------------------------------------

    def _routing(
        self, live: Mapping[str, dict[str, Any]], routes: Iterable[dict[str, Any]]
    ) -> tuple[dict[str, Split], list[RouteResult]]:
        """The gateway's table (host -> weighted targets), and each route's parents and unresolved refs."""
        splits = {(svc.namespace, svc.name): svc.split() for key, svc in self.services.items() if key in live}
        table: dict[str, Split] = {}
        for (namespace, name), split in splits.items():
            hosts = [kserve.host(n, namespace, self.domain) for n in (name, f"{name}-predictor")]
            # and the <name>.<namespace> form, which the HTTPRoutes' hostnames and users' curls use
            hosts += [f"{name}.{namespace}.{self.domain}", f"{name}-predictor.{namespace}.{self.domain}"]
            for host in hosts:
                if _valid_host(host):
                    table[host] = split or [(Target.error(503), 1.0)]
        results: list[RouteResult] = []
        ordered = sorted(routes, key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["namespace"]))
        for route in ordered:
            parents = attached_parents(route, self.gateway_namespace, self.gateway_name)
            if not parents or route["metadata"].get("deletionTimestamp"):
                ours = [
                    p
                    for p in (route.get("status") or {}).get("parents", [])
                    if p.get("controllerName") == CONTROLLER_NAME
                ]
                if ours:  # detached from our Gateway: take our entries out of its status
                    results.append((route, [], []))
                continue
            split, unresolved = route_split(route, splits)
            hosts = [h.lower() for h in route.get("spec", {}).get("hostnames") or []] or [DEFAULT_HOST]
            for host in hosts:
                if host == DEFAULT_HOST or _valid_host(host):
                    table[host] = split
                else:
                    unresolved.append(("UnsupportedValue", f"hostname {host!r} is not a valid DNS name"))
            results.append((route, parents, unresolved))
        return table, results

    def _write_isvc_status(self, svc: Service, isvc: dict[str, Any], ingress_ready: bool) -> None:
        created = svc.servers.get(svc.rollout.created or "")
        state = created.view() if created else kserve.RevisionState(kserve.MISSING)
        ready = svc.servers.get(svc.rollout.ready or "")
        address = f"http://{ready.address}" if ready and ready.state == kserve.READY else None
        status = kserve.isvc_status(
            isvc, self.domain, svc.rollout, svc.traffic, state, address, ingress_ready, datetime.now(UTC)
        )
        self._write_status(INFERENCE_SERVICES, isvc, status)

    def _write_status(self, kind: Resource, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """Replaces the status when it changed; a conflict (the object moved on) waits for the next pass."""
        if obj.get("status") == status:
            return
        meta = obj["metadata"]
        body = {
            "apiVersion": f"{kind.group}/{kind.version}",
            "kind": kind.kind,
            "metadata": meta,
            "spec": obj.get("spec"),
            "status": status,
        }
        try:
            updated: Any = self.custom.replace_namespaced_custom_object_status(
                kind.group, kind.version, meta["namespace"], kind.plural, meta["name"], body
            )
        except ApiException as error:
            if error.status not in (404, 409):
                raise
            return
        obj["status"] = status
        obj["metadata"] = updated["metadata"]

    def _list(self, group: str, version: str, plural: str) -> list[dict[str, Any]]:
        if not self.namespaces:
            listing: Any = self.custom.list_cluster_custom_object(group, version, plural)
            return list(listing["items"])
        items: list[dict[str, Any]] = []
        for namespace in self.namespaces:
            listing = self.custom.list_namespaced_custom_object(group, version, namespace, plural)
            items += listing["items"]
        return items

    # --- revision records -------------------------------------------------------------------

    def _load_store(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.store_path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def _save_store(self) -> None:
        data = {
            svc.key: {
                "uid": svc.uid,
                "revisions": {
                    n: {"template": s.template, "container": s.container} for n, s in sorted(svc.revisions.items())
                },
            }
            for svc in self.services.values()
        }
        text = json.dumps(data, indent=1, sort_keys=True)
        if self.store_path.exists() and self.store_path.read_text() == text:
            return
        partial = self.store_path.with_suffix(".partial")
        partial.write_text(text)
        partial.replace(self.store_path)


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
    parser.add_argument("--domain", default="example.com", help="InferenceService URLs are http://<isvc>.<ns>.<domain>")
    parser.add_argument("--gateway", default="slipway-system/slipway-gateway", help="the Gateway routes attach to")
    parser.add_argument("--gateway-port", type=int, default=None, help="default: the last run's, else a free one")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE added to every model server")
    parser.add_argument("--namespace", action="append", default=[], help="watch only these (default: all)")
    parser.add_argument("--predictor-module", default=PREDICTOR_MODULE)
    parser.add_argument("--interval", type=float, default=0.3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SLIPWAY_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    api = config.new_client_from_config(str(args.kubeconfig))  # type: ignore[no-untyped-call]
    extra = dict(item.split("=", 1) for item in args.env)
    executor = Executor(
        client.CustomObjectsApi(api),
        args.workdir.resolve(),
        extra,
        domain=args.domain,
        gateway=args.gateway,
        gateway_port=args.gateway_port,
        module=args.predictor_module,
        namespaces=args.namespace,
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
