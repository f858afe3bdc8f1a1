"""The Kopf floor: the least any Kopf operator can do for the bench's parents.

A Kopf operator with Slipway's own Kopf settings (the same startup hook: peering, annotation
storage, 32 handler threads, the same API client) whose handlers make exactly the baseline's
calls and nothing else: apply the child built by the same pure builders, and hand the status to
Kopf, which sends it with its own diff-base annotation. No locks, indexes, live reads, events or
rollout engine. Whatever this misses by, no Slipway handler on Kopf can do better: it is the
bench's yardstick for what Kopf itself costs on this machine (`operator_scale.py --floor`).

Steps bench/README.md lists, tried here first (where they cost least to try):
- `SLIPWAY_FLOOR_HANDLERS=event`: level-based handlers (`on.event`, no diff-base: the child and
  status are written when the status lacks them);
- `SLIPWAY_FLOOR_HANDLERS=async`: async create handlers on an asyncio client (bench/kubeapi.py),
  so every object's handler can be in flight at once instead of 32 threads' worth;
- `SLIPWAY_FLOOR_WORKER_LIMIT=N` and `SLIPWAY_FLOOR_IDLE_TIMEOUT=S`: Kopf's per-object workers
  bounded, and how long an idle one holds its slot (5 s by default). (Kopf 1.45 has no batch
  window any more: `settings.batching.batch_window` is a deprecated no-op.)
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import yaml

from slipway.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from slipway.api.modelversion import ModelVersionSpec
from slipway.api.resources import (
    HTTP_ROUTES,
    INFERENCE_SERVICES,
    MODEL_DEPLOYMENTS,
    RAY_JOBS,
    TRAINING_RUNS,
    Resource,
)
from slipway.api.trainingrun import TrainingRunSpec, TrainingRunStatus
from slipway.builders.httproute import Routing
from slipway.builders.rayjob import build_rayjob
from slipway.handlers import settings
from slipway.reconcile.conditions import now_rfc3339
from slipway.reconcile.modeldeployment import Observed, Plan, plan_deployment
from slipway.reconcile.status import status_patch
from slipway.reconcile.trainingrun import training_status

FLOOR = kopf.OperatorRegistry()  # only these handlers: importing slipway.handlers filled the default one
kopf.on.login(registry=FLOOR)(kopf.login_via_client)  # as the default registry has it
kopf.on.startup(registry=FLOOR)(settings.configure)


@kopf.on.startup(registry=FLOOR)
def variant(settings: kopf.OperatorSettings, **_: Any) -> None:
    if limit := os.environ.get("SLIPWAY_FLOOR_WORKER_LIMIT"):
        settings.queueing.worker_limit = int(limit)
    if idle := os.environ.get("SLIPWAY_FLOOR_IDLE_TIMEOUT"):  # how long a worker waits for more events
        settings.queueing.idle_timeout = float(idle)


CONTRACT = yaml.safe_load_all((Path(__file__).parents[1] / "tests/manifests/contract.yaml").read_text())
VERSION = ModelVersionSpec.model_validate([d for d in CONTRACT if d][1]["spec"])


def rayjob_of(name: str, namespace: str, spec: Any, body: kopf.Body) -> dict[str, Any]:
    rayjob = build_rayjob(name, namespace, TrainingRunSpec.model_validate(dict(spec)), 0)
    kopf.adopt(rayjob, owner=body)
    return rayjob


def run_status(rayjob: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
    status = training_status(TrainingRunStatus(), rayjob["metadata"]["name"], observed.get("status"), 1, now_rfc3339())
    return status_patch({}, status) or {}


def deployment_plan(name: str, namespace: str, spec: Any, body: kopf.Body) -> Plan:
    parsed = ModelDeploymentSpec.model_validate(dict(spec))
    now = datetime.now(UTC)
    plan = plan_deployment(name, namespace, parsed, ModelDeploymentStatus(), [VERSION], Observed({}), 1, now, Routing())
    for child in plan.children:
        kopf.adopt(child, owner=body)
    return plan


def kind_of(child: dict[str, Any]) -> Resource:
    return HTTP_ROUTES if child["kind"] == HTTP_ROUTES.kind else INFERENCE_SERVICES


def run_child(name: str, namespace: str, spec: Any, body: kopf.Body, memo: kopf.Memo) -> dict[str, Any]:
    rayjob = rayjob_of(name, namespace, spec, body)
    return run_status(rayjob, memo.kube.apply(RAY_JOBS, rayjob))


def deployment_children(name: str, namespace: str, spec: Any, body: kopf.Body, memo: kopf.Memo) -> dict[str, Any]:
    plan = deployment_plan(name, namespace, spec, body)
    for child in plan.children:
        memo.kube.apply(kind_of(child), child)
    return status_patch({}, plan.status) or {}


HANDLERS = os.environ.get("SLIPWAY_FLOOR_HANDLERS", "create")

if HANDLERS == "async":
    sys.path.insert(0, str(Path(__file__).parent))
    from kubeapi import AsyncKube

    @kopf.on.startup(registry=FLOOR)
    async def async_client(memo: kopf.Memo, **_: Any) -> None:
        memo.akube = AsyncKube(Path(os.environ["KUBECONFIG"]), limit=256)  # 8x the creator's 32 in flight

    @kopf.on.create(*TRAINING_RUNS.ref, registry=FLOOR)
    async def run_created_async(
        name: str, namespace: str | None, spec: Any, body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any
    ) -> None:
        rayjob = rayjob_of(name, namespace or "", spec, body)
        patch.status.update(run_status(rayjob, await memo.akube.apply(*RAY_JOBS.ref, rayjob)))

    @kopf.on.create(*MODEL_DEPLOYMENTS.ref, registry=FLOOR)
    async def deployment_created_async(
        name: str, namespace: str | None, spec: Any, body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any
    ) -> None:
        plan = deployment_plan(name, namespace or "", spec, body)
        for child in plan.children:
            await memo.akube.apply(*kind_of(child).ref, child)
        patch.status.update(status_patch({}, plan.status) or {})

elif HANDLERS == "event":

    @kopf.on.event(*TRAINING_RUNS.ref, registry=FLOOR)
    def run_seen(
        name: str, namespace: str | None, spec: Any, status: Any, body: kopf.Body, memo: kopf.Memo, **_: Any
    ) -> None:
        if not status.get("rayJob"):
            memo.kube.patch_status(
                TRAINING_RUNS, namespace or "", name, run_child(name, namespace or "", spec, body, memo)
            )

    @kopf.on.event(*MODEL_DEPLOYMENTS.ref, registry=FLOOR)
    def deployment_seen(
        name: str, namespace: str | None, spec: Any, status: Any, body: kopf.Body, memo: kopf.Memo, **_: Any
    ) -> None:
        if not status.get("phase"):
            changes = deployment_children(name, namespace or "", spec, body, memo)
            memo.kube.patch_status(MODEL_DEPLOYMENTS, namespace or "", name, changes)

else:

    @kopf.on.create(*TRAINING_RUNS.ref, registry=FLOOR)
    def run_created(
        name: str, namespace: str | None, spec: Any, body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any
    ) -> None:
        patch.status.update(run_child(name, namespace or "", spec, body, memo))

    @kopf.on.create(*MODEL_DEPLOYMENTS.ref, registry=FLOOR)
    def deployment_created(
        name: str, namespace: str | None, spec: Any, body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any
    ) -> None:
        patch.status.update(deployment_children(name, namespace or "", spec, body, memo))


if __name__ == "__main__":
    kopf.configure(debug=False)  # as `slipway operator` runs it
    logging.getLogger().setLevel("INFO")
    kopf.run(registry=FLOOR, clusterwide=True)
