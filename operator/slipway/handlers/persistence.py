"""What Kopf writes on our objects: as little as our handlers allow.

Every handler for a change (create, update, resume) reconciles the whole object from its spec,
its status and its children, and is safe to run again: none needs to know what it last handled
after a restart. Kopf nevertheless spends calls on that memory unless told otherwise:
- the last handled spec, patched into an annotation after every handled change (a call per new
  object, measured in `bench/operator_scale.py`);
- a "kopf-managed" marker annotation, patched into each object once;
- a finalizer on every object a timer runs for (a patch when the timer starts, another when it
  stops), which also holds `kubectl delete` while no operator runs.

Here the last handled spec is kept in the process: a restart, or a standby that takes over, sees
every object as new and reconciles it, which `on.resume` did anyway. Handler progress (retries
and their backoff) still lives on the object, so a failing handler's retries survive a restart.
The deployments' timers act through the index, which drops a deleted deployment, so they need
no finalizer (a TrainingSchedule's timer keeps Kopf's).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import kopf

from ..api.resources import BATCH_PREDICTIONS, MODEL_DEPLOYMENTS, MODEL_VERSIONS, TRAINING_RUNS
from .metrics import forget_deployment

F = TypeVar("F", bound=Callable[..., Any])


class HandledInMemory(kopf.DiffBaseStorage):
    """The essence of each object's last handled spec, by uid, in this process only: as compact
    JSON, a quarter of the memory of the dicts (as the annotation kept it)."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, str] = {}

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        """Kopf's essence, without first deep-copying the whole body (managedFields and status too)
        only to drop most of it: Kopf builds one for every event of every watched object."""
        if extra_fields:  # none of our handlers names fields outside the spec; if one does, Kopf's way
            return super().build(body=body, extra_fields=extra_fields)
        kept = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        metadata = body.get("metadata", {})
        kept["metadata"] = {key: metadata[key] for key in ("labels", "annotations") if key in metadata}
        return super().build(body=kopf.Body(cast(kopf.RawBody, kept)))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        found = self._essences.get(body.metadata.uid or "")
        return None if found is None else cast(kopf.BodyEssence, json.loads(found))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._essences[body.metadata.uid or ""] = json.dumps(essence, separators=(",", ":"))

    def forget(self, uid: str) -> None:
        """A deleted object's essence is never fetched again (a new object has a new uid)."""
        self._essences.pop(uid, None)

    def __len__(self) -> int:
        return len(self._essences)


class UnmarkedProgress(kopf.AnnotationsProgressStorage):
    """Handler progress in our annotations, without the marker Kopf patches into every object
    it handles: the marker only helps other operators' diff-bases ignore our annotations, and
    ours is not kept on the object at all."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return None


def without_finalizer(timer: F) -> F:
    """Apply above `@kopf.timer`: the timer runs without putting a finalizer on its objects.

    Kopf 1.45 sets `requires_finalizer=True` on every timer, with no option to choose; the handler
    it registered for `timer` is replaced with the same one that does not require it."""
    spawning = kopf.get_default_registry()._spawning._handlers
    found = [i for i, handler in enumerate(spawning) if handler.fn is timer]
    if not found:
        raise LookupError(f"{timer.__name__} is not a registered Kopf timer: apply without_finalizer above @kopf.timer")
    for i in found:
        spawning[i] = dataclasses.replace(spawning[i], requires_finalizer=False)
    return timer


def _deleted(type: str, **_: Any) -> bool:
    return type == "DELETED"


async def forget_deleted(
    uid: str, namespace: str | None, name: str, resource: kopf.Resource, memo: kopf.Memo, **_: Any
) -> None:
    """What this process remembers of an object goes with the object."""
    memo.handled.forget(uid)
    memo.written.pop(uid, None)
    memo.written_at.pop(uid, None)
    if resource.plural == MODEL_DEPLOYMENTS.plural:
        forget_deployment(namespace or "", name)


# The kinds with change handlers: the only ones Kopf keeps a last handled spec for.
for _kind in (TRAINING_RUNS, MODEL_DEPLOYMENTS, MODEL_VERSIONS, BATCH_PREDICTIONS):
    kopf.on.event(*_kind.ref, when=_deleted, id="forget_deleted")(forget_deleted)
