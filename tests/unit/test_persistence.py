"""What Kopf keeps on our objects (handlers/persistence.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from slipway.api.modeldeployment import ModelDeploymentStatus
from slipway.handlers import modeldeployment
from slipway.handlers.metrics import DEPLOYMENTS, observe_deployment
from slipway.handlers.persistence import HandledInMemory, UnmarkedProgress, forget_deleted, without_finalizer


def body(uid: str, **spec: Any) -> kopf.Body:
    raw = {"apiVersion": "slipway.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"uid": uid}, "spec": spec}
    return kopf.Body(raw)


def test_the_last_handled_spec_is_kept_by_uid_and_written_nowhere() -> None:
    storage = HandledInMemory()
    first, other = body("a", model="churn"), body("b", model="fraud")
    assert storage.fetch(body=first) is None  # never handled: Kopf sees a creation
    patch = kopf.Patch()
    storage.store(body=first, patch=patch, essence=storage.build(body=first))
    assert not patch
    assert storage.fetch(body=first) == {"spec": {"model": "churn"}}
    assert storage.fetch(body=other) is None
    storage.forget("a")
    assert storage.fetch(body=first) is None and len(storage) == 0


def test_a_changed_spec_differs_from_the_one_kept() -> None:
    storage = HandledInMemory()
    handled = body("a", model="churn", version="3")
    storage.store(body=handled, patch=kopf.Patch(), essence=storage.build(body=handled))
    changed = body("a", model="churn", version="4")
    assert storage.fetch(body=changed) != storage.build(body=changed)


def test_the_essence_is_kopfs_own_without_copying_what_it_drops() -> None:
    raw = {
        "apiVersion": "slipway.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "uid": "a",
            "labels": {"team": "risk"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "slipway.dev/pause": "true"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"model": "churn", "strategy": {"canary": {"steps": [{"weight": 10}]}}},
        "status": {"phase": "Progressing"},
    }
    storage = HandledInMemory()
    essence = storage.build(body=kopf.Body(raw))
    assert essence == kopf.DiffBaseStorage.build(storage, body=kopf.Body(raw))
    assert essence == {
        "spec": raw["spec"],
        "metadata": {"labels": {"team": "risk"}, "annotations": {"slipway.dev/pause": "true"}},
    }
    essence["spec"]["strategy"]["canary"]["steps"][0]["weight"] = 50  # a copy, not the body's own
    assert raw["spec"]["strategy"]["canary"]["steps"][0]["weight"] == 10


def test_progress_is_stored_without_a_marker_and_purged_without_a_trace() -> None:
    storage = UnmarkedProgress(prefix="slipway.dev")
    target = body("a")
    patch = kopf.Patch()
    storage.store(key=kopf.HandlerId("reconcile"), record={"retries": 1, "success": False}, body=target, patch=patch)
    assert set(patch["metadata"]["annotations"]) == {"slipway.dev/reconcile"}
    storage.purge(key=kopf.HandlerId("reconcile"), body=target, patch=patch)
    assert not patch.get("metadata", {}).get("annotations")


def test_the_deployment_timers_put_no_finalizer() -> None:
    timers = {h.fn: h for h in kopf.get_default_registry()._spawning.get_all_handlers()}
    assert timers[modeldeployment.tick].requires_finalizer is False
    assert timers[modeldeployment.watch_deadline].requires_finalizer is False


def test_without_finalizer_refuses_a_function_that_is_not_a_timer() -> None:
    def not_a_timer() -> None: ...

    with pytest.raises(LookupError, match="not_a_timer"):
        without_finalizer(not_a_timer)


def test_a_deleted_object_is_forgotten_with_its_series() -> None:
    """Its essence, the status last written, and (a deployment's) metric series, which Prometheus
    would otherwise scrape for good."""
    memo = kopf.Memo(handled=HandledInMemory(), written={"u1": {}, "u2": {}}, written_at={"u1": "7"})
    handled = body("u1")
    memo.handled.store(body=handled, patch=kopf.Patch(), essence=memo.handled.build(body=handled))
    observe_deployment("ml", "churn", ModelDeploymentStatus.model_validate({"phase": "Stable"}))
    observe_deployment("ml", "fraud", ModelDeploymentStatus.model_validate({"phase": "Stable"}))
    resource = kopf.Resource("slipway.dev", "v1alpha1", "modeldeployments")
    asyncio.run(forget_deleted(uid="u1", namespace="ml", name="churn", resource=resource, memo=memo))
    assert len(memo.handled) == 0 and memo.written == {"u2": {}} and memo.written_at == {}
    named = {s.labels["name"] for m in DEPLOYMENTS.collect() for s in m.samples}
    assert "churn" not in named and "fraud" in named
