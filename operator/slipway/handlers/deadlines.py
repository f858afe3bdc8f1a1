"""The progress deadlines of the deployments waiting for their candidates, watched by one loop.

While a candidate is not ready, its readiness comes as an event and only its progress deadline is
up to time (`reconcile.rollout.only_deadline_timed`). A Kopf timer per waiting deployment cost a
task each, and Kopf's finalizer patches; at 1,000 new deployments, 15% of the operator's time and
memory (bench/operator_scale.py). One loop looks at every waiting deployment in the index every
few seconds, in the event loop, and reconciles only those whose deadline has passed: a deadline is
acted on at most `DEADLINE_TICK_SECONDS` late. Like a timer, it stands by while Kopf pauses this
replica for a peer of higher priority (kube/peers.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.defaults import MissingField, OperatorDefaults
from ..api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from ..reconcile.rollout import only_deadline_timed, parse_time, progress_deadline
from .modeldeployment import DeploymentRecord, reconcile_deployment

DEADLINE_TICK_SECONDS = 5.0

logger = logging.getLogger("slipway.handlers.deadlines")
Key = tuple[str | None, str]


def deadline_of(record: DeploymentRecord, defaults: OperatorDefaults) -> datetime | None:
    """When the deployment's waiting candidate is given up; None when it is not waiting for one
    (or its spec or status cannot be read: the reconcile its event brought has said why)."""
    try:
        status = ModelDeploymentStatus.model_validate(record.status)
        if not only_deadline_timed(status) or status.rollout_started_at is None:
            return None  # without a start, the deadline counts from "now": never passed
        spec = defaults.deployment(ModelDeploymentSpec.model_validate(record.spec))
    except (MissingField, ValidationError):  # one deployment's bad record holds up no other
        return None
    return progress_deadline(spec, status, parse_time(status.rollout_started_at))


class Deadlines:
    """Each deployment's deadline, parsed once per version of its record in the index."""

    def __init__(self) -> None:
        self._parsed: dict[Key, tuple[str | None, datetime | None]] = {}

    def due(self, index: Mapping[Key, Any], defaults: OperatorDefaults, now: datetime) -> list[Key]:
        parsed: dict[Key, tuple[str | None, datetime | None]] = {}
        for key in index:
            record: DeploymentRecord | None = next(iter(index[key]), None)
            if record is None:
                continue
            known = self._parsed.get(key)
            if known is None or known[0] != record.resource_version:
                known = (record.resource_version, deadline_of(record, defaults))
            parsed[key] = known
        self._parsed = parsed  # deleted deployments drop out
        return [key for key, (_, deadline) in parsed.items() if deadline is not None and now >= deadline]


async def watch_deadlines(memo: kopf.Memo, indexes: dict[str, Any], tick: float = DEADLINE_TICK_SECONDS) -> None:
    deadlines = Deadlines()
    while True:
        await asyncio.sleep(tick)
        try:
            # The index fills only once Kopf watches, after every startup handler (settings' too).
            index = indexes["deployments"]
            due = deadlines.due(index, memo.defaults, datetime.now(UTC)) if index else []
            if not due or (memo.peers is not None and memo.peers.outranked()):
                continue
            done = await asyncio.gather(
                *(asyncio.to_thread(reconcile_deployment, memo, ns or "", name, indexes, False) for ns, name in due),
                return_exceptions=True,
            )
            for (ns, name), outcome in zip(due, done, strict=True):
                if isinstance(outcome, Exception):  # the next tick tries again
                    logger.warning("deadline of %s/%s: %s", ns, name, outcome)
        except Exception:  # the loop outlives any one failure, as Kopf's timers did
            logger.exception("watching the progress deadlines")


@kopf.on.startup()
async def start_watching_deadlines(memo: kopf.Memo, **kwargs: Any) -> None:
    """`kwargs` carries Kopf's indexes: live views, filled once the watches start."""
    memo.deadline_watch = asyncio.create_task(watch_deadlines(memo, kwargs), name="slipway-deadlines")


@kopf.on.cleanup()
async def stop_watching_deadlines(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get("deadline_watch")
    if task is not None:
        task.cancel()
