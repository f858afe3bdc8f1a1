"""The integration tests' KServe: what KServe (with Knative in Knative mode) decides for an
InferenceService, as pure functions, for `tests.support` to write as status.

The integration tests share one control plane in which no KServe runs (it would take every
namespace's InferenceServices); the conformance tests check this against the real KServe, and the
dev stack runs the real one.

Revisions: a new one whenever the predictor's template changes (everything but
`canaryTrafficPercent`, which only moves traffic), named `<isvc>-predictor-<generation:05d>`.
Traffic (Knative): with `canaryTrafficPercent` and a rolled-out revision, that percent to the
latest ready revision and the rest to the last rolled-out one; otherwise 100% to the latest ready
one, which then counts as rolled out (KServe's own bookkeeping, including its rollback rule).
Standard: a Deployment rollout, all traffic on the newest ready revision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
KNATIVE = "Knative"
STANDARD = "Standard"
LEGACY_MODES = {"Serverless": KNATIVE, "RawDeployment": STANDARD}  # KServe still reads the old names
READY_PATH = "/v2/health/ready"

# What one model-server process is doing.
STARTING = "Starting"
READY = "Ready"
UNREADY = "Unready"  # was ready, fails its readiness probe now
FAILED = "Failed"  # exited; restarted after a back-off
MISSING = "Missing"  # no process (not started yet, or its spec is unknown)


def revision_name(isvc: str, number: int) -> str:
    return f"{isvc}-predictor-{number:05d}"


def revision_number(revision: str | None) -> int:
    """A revision's number: Knative counts its Service's generations, as a Deployment counts its own
    (both move only when the pod template does, never with the InferenceService's generation)."""
    return int(revision.rsplit("-", 1)[1]) if revision else 0


def next_revision(isvc: str, rollout: Rollout) -> str:
    return revision_name(isvc, revision_number(rollout.created) + 1)


def deployment_mode(isvc: Mapping[str, Any]) -> str:
    """The annotation, legacy names normalized as KServe does; unset: Knative (the defaultDeploymentMode
    of KServe's shipped config map). The operator always says which."""
    annotations = isvc.get("metadata", {}).get("annotations") or {}
    mode = annotations.get(MODE_ANNOTATION) or KNATIVE
    return STANDARD if LEGACY_MODES.get(mode, mode) == STANDARD else KNATIVE


def host(name: str, namespace: str, domain: str) -> str:
    """KServe's default domainTemplate, {{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}."""
    return f"{name}-{namespace}.{domain}"


# What never reaches the pod template: traffic, and in Standard mode the replica range (the HPA's).
NOT_IN_TEMPLATE = {KNATIVE: {"canaryTrafficPercent"}, STANDARD: {"canaryTrafficPercent", "minReplicas", "maxReplicas"}}


def template_hash(predictor: Mapping[str, Any], mode: str = KNATIVE) -> str:
    """Identity of a revision: the predictor spec without what KServe puts elsewhere."""
    template = {key: value for key, value in predictor.items() if key not in NOT_IN_TEMPLATE[mode]}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def canary_percent(isvc: Mapping[str, Any]) -> int | None:
    value = isvc.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")
    return None if value is None else max(0, min(100, int(value)))


@dataclass(frozen=True)
class Rollout:
    """KServe's revision bookkeeping for one component (lives in status between reconciles)."""

    created: str | None = None
    ready: str | None = None
    rolled_out: str | None = None
    previous: str | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> Rollout:
        predictor = ((status or {}).get("components") or {}).get("predictor") or {}
        return cls(
            predictor.get("latestCreatedRevision"),
            predictor.get("latestReadyRevision"),
            predictor.get("latestRolledoutRevision"),
            predictor.get("previousRolledoutRevision"),
        )

    def known(self, names: set[str]) -> Rollout:
        """Forgets revisions whose spec is unknown (so they cannot be run again)."""

        def keep(name: str | None) -> str | None:
            return name if name in names else None

        return Rollout(keep(self.created), keep(self.ready), keep(self.rolled_out), keep(self.previous))


@dataclass(frozen=True)
class TrafficTarget:
    revision: str
    percent: int
    latest: bool
    tag: str

    def as_status(self) -> dict[str, Any]:
        return {"revisionName": self.revision, "percent": self.percent, "latestRevision": self.latest, "tag": self.tag}


def traffic(mode: str, canary: int | None, rollout: Rollout) -> list[TrafficTarget]:
    """Where requests go now; the latest ready revision stands in for one still starting."""
    if rollout.ready is None:
        return []
    if mode == KNATIVE and canary is not None and rollout.rolled_out:
        return [
            TrafficTarget(rollout.ready, canary, True, "latest"),
            TrafficTarget(rollout.rolled_out, 100 - canary, False, "prev"),
        ]
    return [TrafficTarget(rollout.ready, 100, True, "latest")]


def advance(rollout: Rollout, targets: Sequence[TrafficTarget]) -> Rollout:
    """KServe's rule: the latest ready revision is rolled out once it has 100% of the traffic;
    a rolled-out revision that gets a canary split again (no new revision) rolls back."""
    latest = next((t for t in targets if t.latest), None)
    if latest is None or rollout.ready is None:
        return rollout
    if rollout.rolled_out != rollout.ready:
        if latest.percent == 100:
            return replace(rollout, previous=rollout.rolled_out, rolled_out=rollout.ready)
        return rollout
    on_latest = sum(t.percent for t in targets if t.revision == latest.revision)
    if rollout.ready == rollout.created and latest.percent < 100 and rollout.previous and on_latest == 100:
        return replace(rollout, rolled_out=rollout.previous)
    return rollout


def settle(mode: str, canary: int | None, rollout: Rollout) -> tuple[Rollout, list[TrafficTarget]]:
    """Traffic and bookkeeping after one reconcile (twice through, as KServe converges)."""
    targets = traffic(mode, canary, rollout)
    for _ in range(2):
        after = advance(rollout, targets)
        if after == rollout:
            break
        rollout = after
        targets = traffic(mode, canary, rollout)
    return rollout, targets


@dataclass(frozen=True)
class RevisionState:
    """What the latest created revision's process is doing."""

    state: str
    message: str = ""
    exit_code: int | None = None


def _condition(
    kind: str, status: str, reason: str, message: str, previous: Sequence[Mapping[str, Any]], now: str
) -> dict[str, Any]:
    since = next(
        (c.get("lastTransitionTime") for c in previous if c.get("type") == kind and c.get("status") == status), None
    )
    cond: dict[str, Any] = {"type": kind, "status": status, "lastTransitionTime": since or now}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def predictor_condition(revision: str | None, state: RevisionState) -> tuple[str, str, str]:
    if revision is None:
        return "False", "RevisionMissing", state.message or "no revision could be created from spec.predictor"
    if state.state == READY:
        return "True", "", ""
    if state.state == FAILED:
        return "False", "RevisionFailed", state.message or f"revision {revision} exited"
    if state.state == UNREADY:
        return "False", "RevisionNotReady", f"revision {revision} stopped answering GET {READY_PATH}"
    return "Unknown", "RevisionStarting", f"revision {revision} is starting: waiting for GET {READY_PATH} to answer 200"


def model_status(state: RevisionState, serving: bool) -> dict[str, Any]:
    target, transition = {
        READY: ("Loaded", "UpToDate"),
        FAILED: ("FailedToLoad", "BlockedByFailedLoad"),
    }.get(state.state, ("Loading", "InProgress"))
    status: dict[str, Any] = {
        "transitionStatus": transition,
        "states": {
            "activeModelState": "Loaded" if serving else ("FailedToLoad" if state.state == FAILED else "Pending"),
            "targetModelState": target,
        },
    }
    if state.state == FAILED:
        failure: dict[str, Any] = {"reason": "ModelLoadFailed", "message": state.message}
        if state.exit_code is not None:
            failure["exitCode"] = state.exit_code
        status["lastFailureInfo"] = failure
    return status


def isvc_status(
    isvc: Mapping[str, Any],
    domain: str,
    rollout: Rollout,
    targets: Sequence[TrafficTarget],
    created: RevisionState,
    address: str | None,
    ingress_ready: bool,
    now: datetime,
) -> dict[str, Any]:
    """The status KServe writes: observedGeneration, url, address, components, conditions, modelStatus."""
    meta = isvc["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    previous = (isvc.get("status") or {}).get("conditions") or []
    stamp = now.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    predictor = predictor_condition(rollout.created, created)
    ingress = (
        ("True", "", "")
        if ingress_ready
        else ("Unknown", "IngressNotConfigured", "the gateway has not loaded this service's route yet")
    )
    ready = next((c for c in (predictor, ingress) if c[0] != "True"), ("True", "", ""))
    mode = deployment_mode(isvc)
    component: dict[str, Any] = {}
    if predictor[0] == "True":  # KServe sets the URLs only once ready, from its domain template
        component["url"] = f"http://{host(f'{name}-predictor', namespace, domain)}"
    # Revision names in Standard mode too (real KServe writes none there, and the operator reads
    # them only in Knative mode): the executor adopts its running revisions from them on restart.
    if rollout.created:
        component["latestCreatedRevision"] = rollout.created
    if rollout.ready:
        component["latestReadyRevision"] = rollout.ready
    if mode == KNATIVE:
        if rollout.rolled_out:
            component["latestRolledoutRevision"] = rollout.rolled_out
        if rollout.previous:
            component["previousRolledoutRevision"] = rollout.previous
        component["traffic"] = [t.as_status() for t in targets]
    status: dict[str, Any] = {
        "deploymentMode": mode,
        "components": {"predictor": component},
        "conditions": [
            _condition("IngressReady", *ingress, previous, stamp),
            _condition("PredictorReady", *predictor, previous, stamp),
            _condition("Ready", *ready, previous, stamp),
        ],
        "modelStatus": model_status(created, address is not None),
    }
    if rollout.created:  # the Deployment's (Knative Service's) generation, not the InferenceService's
        status["observedGeneration"] = revision_number(rollout.created)
    if ready[0] == "True":  # the URL and address only once Ready, as KServe sets them
        status["url"] = f"http://{host(name, namespace, domain)}"
        if address:
            status["address"] = {"url": address}
            if mode == KNATIVE:
                component["address"] = {"url": address}
    return status
