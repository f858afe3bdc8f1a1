"""The dev stack's kubelet: the pods bound to its node run as local processes.

In the dev stack the real controllers make the pods: KServe's controller manager turns each
InferenceService into a Deployment, kube-controller-manager makes its ReplicaSet and pods, and
kube-scheduler binds them to this node. What a machine without containers still needs is a
kubelet: this runs each pod's one container as `python -m pipelines.predictor` (a `ModelServer`,
whatever the image: the dev stack serves the predictor from this tree), with the container's env
resolved as a kubelet resolves it, probes it with the pod's readinessProbe, restarts it with a
back-off, writes the pod's status, and finishes a deleted pod once its process is gone.

Each process listens on a port of its own (the pods share one network here); `addresses()` says
which, for the gateway, which routes to pods as a Gateway routes to a Service's endpoints.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .modelserver import READY, STARTING, UNREADY, ModelServer

log = logging.getLogger("slipway.devstack.kubelet")

NODE = "devstack"
HOST_IP = "127.0.0.1"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
# What the node offers the scheduler: room for every predictor a demo or a test runs (KServe's
# default requests are 1 CPU and 2Gi each); the processes share the machine as they can.
CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "110"}


def stamp(now: datetime) -> str:
    return now.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def node_manifest(now: datetime) -> dict[str, Any]:
    """The node this kubelet registers, Ready (no node controller runs to taint it otherwise)."""
    heartbeat = stamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}},
        "status": {
            "capacity": CAPACITY,
            "allocatable": CAPACITY,
            "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": NODE}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "the dev stack's kubelet runs pods as local processes",
                    "lastHeartbeatTime": heartbeat,
                    "lastTransitionTime": heartbeat,
                }
            ],
        },
    }


def refusal(pod: Mapping[str, Any]) -> str | None:
    """Why this kubelet cannot run the pod, or None: it runs pods of one container, no init containers."""
    spec = pod.get("spec") or {}
    if spec.get("initContainers"):
        return "the dev stack's kubelet runs no init containers"
    if len(spec.get("containers") or []) != 1:
        return "the dev stack's kubelet runs pods of exactly one container"
    return None


@dataclass(frozen=True)
class Container:
    """What the pod's status says of its one container."""

    state: str  # STARTING, READY, UNREADY or FAILED
    restarts: int = 0
    started_at: str = ""
    pid: int | None = None
    exit_code: int | None = None
    finished_at: str = ""
    message: str = ""  # the tail of its log after an exit


def _condition(kind: str, ok: bool, previous: Mapping[str, Any], now: str, reason: str = "") -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind) or {}
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    cond = {"type": kind, "status": status, "lastTransitionTime": since or now}
    if reason:
        cond["reason"] = reason
    return cond


def pod_status(
    pod: Mapping[str, Any], container: Container | None, refused: str | None, now: datetime
) -> dict[str, Any]:
    """The status a kubelet writes for the pod: phase, IPs, conditions and the container's status."""
    status = dict(pod.get("status") or {})
    previous = {c.get("type"): c for c in status.get("conditions") or []}
    when = stamp(now)
    spec = (pod.get("spec") or {}).get("containers") or [{}]
    if refused is not None:
        return {**status, "phase": "Failed", "reason": "Unsupported", "message": refused, "hostIP": HOST_IP}
    if container is None:  # not started yet (a Secret it needs is missing, say)
        return status
    ready = container.state == READY
    running = container.state in (STARTING, READY, UNREADY)
    name = spec[0].get("name", "")
    waiting = f"back-off restarting failed container {name} in pod {pod['metadata']['name']}"
    entry: dict[str, Any] = {
        "name": name,
        "image": spec[0].get("image", ""),
        "imageID": "",
        "containerID": f"devstack://{container.pid}" if container.pid else "",
        "ready": ready,
        "started": running,
        "restartCount": container.restarts,
        "state": (
            {"running": {"startedAt": container.started_at}}
            if running
            else {"waiting": {"reason": "CrashLoopBackOff", "message": waiting}}
        ),
    }
    if container.exit_code is not None:  # the last exit, until the next one
        terminated = {"exitCode": container.exit_code, "reason": "Error", "finishedAt": container.finished_at}
        entry["lastState"] = {
            "terminated": {**terminated, **({"message": container.message} if container.message else {})}
        }
    conditions = [
        _condition("PodReadyToStartContainers", True, previous, when),
        _condition("Initialized", True, previous, when),
        _condition("Ready", ready, previous, when, "" if ready else "ContainersNotReady"),
        _condition("ContainersReady", ready, previous, when, "" if ready else "ContainersNotReady"),
        *[c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"],
    ]
    return {
        **status,
        "phase": "Running",
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "podIP": HOST_IP,
        "podIPs": [{"ip": HOST_IP}],
        "startTime": status.get("startTime") or when,
        "qosClass": status.get("qosClass") or "Burstable",
        "conditions": conditions,
        "containerStatuses": [entry],
    }


class Kubelet:
    """Runs the pods bound to NODE; `sync` once per pass, `finish` once the gateway stopped routing."""

    def __init__(self, core: client.CoreV1Api, log_dir: Path, module: str, extra_env: Mapping[str, str]) -> None:
        self.core = core
        self.log_dir = log_dir
        self.module = module
        self.extra_env = dict(extra_env)
        self.servers: dict[str, ModelServer] = {}  # pod uid -> its process
        self.refused: dict[str, str] = {}  # pod uid -> why it cannot run here

    def register(self) -> None:
        """Creates the node, or marks it Ready again after a restart."""
        manifest = node_manifest(datetime.now(UTC))
        try:
            body: Any = {k: v for k, v in manifest.items() if k != "status"}
            self.core.create_node(body)
        except ApiException as error:
            if error.status != 409:
                raise
        self.core.patch_node_status(NODE, {"status": manifest["status"]})
        # The apiserver taints a new node not-ready; the node lifecycle controller lifts the taint
        # once the node is Ready. That controller does not run here (it would want a kubelet's
        # leases and heartbeats), so the taint it would lift is lifted here.
        node: Any = self.core.read_node(NODE)
        taints = [t for t in node.spec.taints or [] if t.key != NOT_READY_TAINT]
        if len(taints) != len(node.spec.taints or []):
            self.core.patch_node(
                NODE, {"spec": {"taints": [self.core.api_client.sanitize_for_serialization(t) for t in taints]}}
            )

    def pods(self) -> list[dict[str, Any]]:
        listing = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}")
        return [self.core.api_client.sanitize_for_serialization(p) for p in listing.items]

    def sync(self, pods: Iterable[dict[str, Any]], now: float) -> None:
        """Starts a process for every new pod, and lets each notice exits, restart and probe."""
        for pod in pods:
            meta = pod["metadata"]
            uid = meta["uid"]
            if meta.get("deletionTimestamp") or uid in self.refused:
                continue
            server = self.servers.get(uid)
            if server is None:
                why = refusal(pod)
                if why is not None:
                    self.refused[uid] = why
                    log.warning("pod %s/%s: %s", meta["namespace"], meta["name"], why)
                    continue
                try:
                    env = self.environment(pod)
                except (ApiException, KeyError) as error:  # a missing Secret: the kubelet waits for it
                    log.warning("pod %s/%s: env: %s", meta["namespace"], meta["name"], error)
                    continue
                (container,) = pod["spec"]["containers"]
                server = ModelServer(f"{meta['namespace']}/{meta['name']}", container, self.module, env, self.log_dir)
                server.start()
                self.servers[uid] = server
            server.check(now)

    def addresses(self, pods: Iterable[dict[str, Any]]) -> dict[str, str]:
        """Pod uid -> the local address of its process, for pods that are ready and not being deleted."""
        return {
            p["metadata"]["uid"]: self.servers[p["metadata"]["uid"]].address
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and p["metadata"]["uid"] in self.servers
            and self.servers[p["metadata"]["uid"]].state == READY
        }

    def finish(self, pods: Iterable[dict[str, Any]]) -> None:
        """Stops the processes of deleted pods (the gateway routes none to them any more), removes
        a deleted pod once its processes are gone, and writes every other pod's status."""
        seen: set[str] = set()
        for pod in pods:
            meta = pod["metadata"]
            uid = meta["uid"]
            seen.add(uid)
            if meta.get("deletionTimestamp"):
                if self._stopped(uid):
                    self._delete(pod)
                continue
            self._write_status(pod, self._container(uid), self.refused.get(uid))
        for uid in set(self.servers) - seen:  # the pod is gone from the API: stop its process
            self._stopped(uid)

    def _stopped(self, uid: str) -> bool:
        """SIGTERM to the pod's process (once); True once it and what it started are gone."""
        server = self.servers.get(uid)
        if server is not None:
            server.terminate()
            if not server.gone():
                return False
            server.release()
            del self.servers[uid]
        return True

    def kill_overdue(self, grace: float, now: float) -> None:
        """SIGKILL for what outlived its pod's grace period since the first SIGTERM."""
        for server in self.servers.values():
            if server.terminated_at is not None and now - server.terminated_at > grace:
                server.kill()

    def _container(self, uid: str) -> Container | None:
        server = self.servers.get(uid)
        if server is None:
            return None
        pid = server.proc.pid if server.proc else None
        code, finished = server.last_exit or (None, None)
        when = (stamp(server.started_at), stamp(finished) if finished else "")
        return Container(server.state, server.restarts, when[0], pid, code, when[1], server.message)

    def _write_status(self, pod: dict[str, Any], container: Container | None, refused: str | None) -> None:
        status = pod_status(pod, container, refused, datetime.now(UTC))
        if _same(status, pod.get("status") or {}):
            return
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def _delete(self, pod: dict[str, Any]) -> None:
        """What a kubelet does once a deleted pod's containers are gone: delete it for good."""
        meta = pod["metadata"]
        body = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"]))
        try:
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=body)
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def environment(self, pod: Mapping[str, Any]) -> dict[str, str]:
        """The container's environment as a kubelet builds it, over the stack's own variables:
        envFrom Secrets (the operator's credentials), then env values and Secret keys. Other sources
        (ConfigMaps, the pod's own fields) are nothing Slipway writes: this kubelet leaves them out."""
        (container,) = pod["spec"]["containers"]
        namespace = pod["metadata"]["namespace"]
        env = dict(self.extra_env)
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                secret = self._secret(namespace, source["secretRef"]["name"])
                env.update({source.get("prefix", "") + k: v for k, v in secret.items()})
        for item in container.get("env") or []:
            key = (item.get("valueFrom") or {}).get("secretKeyRef")
            if key:
                env[item["name"]] = self._secret(namespace, key["name"])[key["key"]]
            elif "valueFrom" not in item:
                env[item["name"]] = str(item.get("value", ""))
        return env

    def _secret(self, namespace: str, name: str) -> dict[str, str]:
        data = self.core.read_namespaced_secret(name, namespace).data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _same(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Equal as the API serves it back (it leaves out what is null)."""
    return {k: v for k, v in new.items() if v is not None} == {k: v for k, v in old.items() if v is not None}
