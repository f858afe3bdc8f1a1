"""The invariants a fault must never break, checked throughout by a thread that polls the API server.

Each round reads, in this order, the ModelDeployments, then the HTTPRoutes, then the
InferenceServices, then the registry and the training runs. The order matters: the operator
applies an InferenceService before the route that sends it traffic, and writes a rollback to
the route before the deployment's status says so; read in the other order, a round could see a
state the operator never had (a route from before a rollback next to a status from after it).

What is checked, every round:
- routing: a backend with weight > 0 is an InferenceService that was seen Ready (unless no other
  version was ever promoted: a deployment's first version has its traffic at once, there being
  nothing else to serve it), and its version was never rolled back (status.rolledBackVersion or a
  RolledBack history entry, ever);
- weights: every route's weights sum to 100;
- children: per deployment at most one route and one InferenceService per version, each
  controlled by that deployment; per training run at most one RayJob per attempt (and only
  attempts it has reached);
- latest: a deployment on `version: latest` never rolls out a version older than one it promoted;
- history: a deployment's status.history only grows (a lost or rewritten entry means a status
  was written from a stale view);
- registry: a (model, number) pair names one ModelVersion for good (never deleted and made
  again), a run's recorded modelVersion never changes, and no two runs share one.
"Every rollout ends" is the driver's check, with its own deadline.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from slipway.api.resources import DEPLOYMENT_LABEL, TRAINING_RUN_LABEL, VERSION_LABEL
from slipway.reconcile.rollout import HISTORY_LIMIT
from tests.support import Cluster

SLIPWAY = ("slipway.dev", "v1alpha1")
INFERENCE = ("serving.kserve.io", "v1beta1")
GATEWAY = ("gateway.networking.k8s.io", "v1")
RAY = ("ray.io", "v1")
PREDICTOR_SUFFIX = "-predictor"
# An API server that is down or restarting: the round is skipped, and counted.
UNREACHABLE = (ApiException, HTTPError, OSError)


@dataclass
class Invariants:
    """A watcher thread over one namespace; `violations` lists every breach with when it was seen."""

    cluster: Cluster
    namespace: str
    interval: float = 0.2
    violations: list[str] = field(default_factory=list)
    rounds: int = 0
    skipped_rounds: int = 0  # the API server did not answer
    rolled_back: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    promoted: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    history: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    ever_ready: set[str] = field(default_factory=set)  # InferenceService names seen Ready
    mv_uids: dict[tuple[str, int], str] = field(default_factory=dict)
    run_versions: dict[str, str] = field(default_factory=dict)
    max_rayjobs: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"invariants-{self.namespace}", daemon=True)
        self._started = time.monotonic()

    def start(self) -> Invariants:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the watcher after one last round, so the final state is checked too."""
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the invariant watcher did not stop"
        self.check_once()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check_once()

    def check_once(self) -> None:
        try:
            self._round()
        except UNREACHABLE:
            self.skipped_rounds += 1
            return
        self.rounds += 1

    def _violation(self, what: str) -> None:
        self.violations.append(f"t+{time.monotonic() - self._started:.1f}s: {what}")

    def _list(self, group: tuple[str, str], plural: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.custom.list_namespaced_custom_object(
            *group, self.namespace, plural, _request_timeout=10
        )["items"]
        return items

    def _round(self) -> None:
        deployments = self._list(SLIPWAY, "modeldeployments")
        routes = self._list(GATEWAY, "httproutes")
        isvcs = self._list(INFERENCE, "inferenceservices")
        versions = self._list(SLIPWAY, "modelversions")
        rayjobs = self._list(RAY, "rayjobs")
        runs = self._list(SLIPWAY, "trainingruns")
        uids = {md["metadata"]["name"]: md["metadata"]["uid"] for md in deployments}
        for md in deployments:
            status = md.get("status") or {}
            bad = self.rolled_back[md["metadata"]["name"]]
            if status.get("rolledBackVersion") is not None:
                bad.add(int(status["rolledBackVersion"]))
            bad.update(int(h["version"]) for h in status.get("history", []) if h.get("outcome") == "RolledBack")
            good = self.promoted[md["metadata"]["name"]]
            good.update(int(h["version"]) for h in status.get("history", []) if h.get("outcome") == "Promoted")
            self._check_history(md["metadata"]["name"], status.get("history", []))
            candidate = status.get("candidateVersion")
            newest = max(good, default=0)
            if md["spec"].get("version") == "latest" and candidate is not None and int(candidate) < newest:
                self._violation(f"deployment {md['metadata']['name']}: rolling out {candidate}, older than {newest}")
        for isvc in isvcs:
            conditions = {c.get("type"): c.get("status") for c in (isvc.get("status") or {}).get("conditions", [])}
            if conditions.get("Ready") == "True":
                self.ever_ready.add(isvc["metadata"]["name"])
        self._check_routes(routes, {i["metadata"]["name"]: i for i in isvcs})
        self._check_children(uids, routes, isvcs)
        self._check_registry(versions, runs, rayjobs)

    def _check_history(self, md: str, entries: list[dict[str, Any]]) -> None:
        """The history only grows (its oldest entries fall off past HISTORY_LIMIT): an entry that
        disappears, or a past one rewritten, means a status was written from a stale view."""
        now = [(h["version"], h["outcome"], h.get("time")) for h in entries]
        before = self.history.get(md, [])
        kept = [h for h in before if h in now]
        dropped = len(before) - len(kept)
        if kept != before[dropped:] or now[: len(kept)] != kept or (dropped and len(now) < HISTORY_LIMIT):
            self._violation(f"deployment {md}: history went from {before} to {now}")
        self.history[md] = now

    def _check_routes(self, routes: list[dict[str, Any]], isvcs: dict[str, dict[str, Any]]) -> None:
        for route in routes:
            md = route["metadata"].get("labels", {}).get(DEPLOYMENT_LABEL, "")
            refs = [ref for rule in route["spec"].get("rules", []) for ref in rule.get("backendRefs", [])]
            total = sum(int(ref.get("weight", 1)) for ref in refs)
            if refs and total != 100:
                self._violation(f"route {route['metadata']['name']}: weights sum to {total}: {refs}")
            for ref in refs:
                if int(ref.get("weight", 1)) <= 0:
                    continue
                isvc_name = ref["name"].removesuffix(PREDICTOR_SUFFIX)
                isvc = isvcs.get(isvc_name)
                label = (isvc or {}).get("metadata", {}).get("labels", {}).get(VERSION_LABEL)
                number = int(label) if label else _version_from_name(isvc_name)
                # A first version gets its traffic at once: there is nothing else to serve it.
                alternatives = self.promoted[md] - {number}
                if isvc_name not in self.ever_ready and alternatives:
                    self._violation(f"route {md}: {ref['weight']}% to {isvc_name}, never seen Ready")
                if number is not None and number in self.rolled_back[md]:
                    self._violation(f"route {md}: {ref['weight']}% to version {number}, which was rolled back")

    def _check_children(self, uids: dict[str, str], routes: list[dict[str, Any]], isvcs: list[dict[str, Any]]) -> None:
        route_count = Counter(r["metadata"].get("labels", {}).get(DEPLOYMENT_LABEL) for r in routes)
        for md, count in route_count.items():
            if count > 1:
                self._violation(f"deployment {md} has {count} HTTPRoutes")
        per_version = Counter(
            (i["metadata"]["labels"].get(DEPLOYMENT_LABEL), i["metadata"]["labels"].get(VERSION_LABEL)) for i in isvcs
        )
        for (md, number), count in per_version.items():
            if count > 1:
                self._violation(f"deployment {md} has {count} InferenceServices for version {number}")
        for child in [*routes, *isvcs]:
            meta = child["metadata"]
            md = meta.get("labels", {}).get(DEPLOYMENT_LABEL)
            controllers = [o["uid"] for o in meta.get("ownerReferences", []) if o.get("controller")]
            if md in uids and controllers != [uids[md]]:
                self._violation(f"{meta['name']}: controlled by {controllers}, not deployment {md}")

    def _check_registry(
        self, versions: list[dict[str, Any]], runs: list[dict[str, Any]], rayjobs: list[dict[str, Any]]
    ) -> None:
        for mv in versions:
            key = (mv["spec"]["model"], int(mv["spec"]["version"]))
            first = self.mv_uids.setdefault(key, mv["metadata"]["uid"])
            if first != mv["metadata"]["uid"]:
                self._violation(f"ModelVersion {key} was made twice ({first}, then {mv['metadata']['uid']})")
        by_version: dict[str, list[str]] = defaultdict(list)
        attempts = {r["metadata"]["name"]: int((r.get("status") or {}).get("attempt", 0)) for r in runs}
        for run in runs:
            name, recorded = run["metadata"]["name"], (run.get("status") or {}).get("modelVersion")
            if not recorded:
                continue
            by_version[recorded].append(name)
            first = self.run_versions.setdefault(name, recorded)
            if first != recorded:
                self._violation(f"run {name}: modelVersion changed from {first} to {recorded}")
        for recorded, owners in by_version.items():
            if len(owners) > 1:
                self._violation(f"{recorded} is recorded by several runs: {owners}")
        jobs = Counter(j["metadata"].get("labels", {}).get(TRAINING_RUN_LABEL) for j in rayjobs)
        for run_name, count in jobs.items():
            self.max_rayjobs[run_name] = max(self.max_rayjobs[run_name], count)
            # The next attempt's RayJob is made just before the status that counts it.
            if run_name in attempts and count > attempts[run_name] + 2:
                self._violation(f"run {run_name}: {count} RayJobs at attempt {attempts[run_name]}")
        for job in rayjobs:
            run_name = job["metadata"].get("labels", {}).get(TRAINING_RUN_LABEL, "")
            suffix = job["metadata"]["name"].removeprefix(f"{run_name}-")
            if not suffix.isdigit():
                self._violation(f"RayJob {job['metadata']['name']} is no attempt of run {run_name}")

    def report(self) -> str:
        return (
            f"{self.rounds} rounds checked ({self.skipped_rounds} skipped: API server unreachable), "
            f"{len(self.violations)} violations"
        )


def _version_from_name(isvc_name: str) -> int | None:
    found = re.search(r"-v(\d+)$", isvc_name)
    return int(found[1]) if found else None
