"""Status writes: only the fields that changed, and nothing when nothing did."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


def status_patch(current: dict[str, Any] | None, desired: BaseModel) -> dict[str, Any] | None:
    """A merge patch turning `current` into `desired`, or None when they already agree."""
    want = desired.model_dump(by_alias=True, exclude_none=True)
    have = current or {}
    patch = {key: _merge_patch(have.get(key), value) for key, value in want.items() if have.get(key) != value}
    # Fields we no longer set are cleared (null deletes in a merge patch).
    ours = {info.alias or name for name, info in type(desired).model_fields.items()}
    for key in have:
        if key not in want and key in ours:
            patch[key] = None
    return patch or None


def _merge_patch(have: Any, want: Any) -> Any:
    """What turns `have` into `want` under a JSON merge patch: an object is merged key by key (a
    recorded spec.predictor losing a key, say), so what it no longer has must be sent as null."""
    if not isinstance(have, Mapping) or not isinstance(want, dict):
        return want
    patch = {key: _merge_patch(have.get(key), value) for key, value in want.items() if have.get(key) != value}
    return patch | {key: None for key in have if key not in want}


def fresher_status(
    written: dict[str, Any] | None, written_at: str | None, observed: dict[str, Any], observed_at: str | None
) -> dict[str, Any]:
    """The status to reconcile from: the one this replica last wrote, or the one its watch shows.

    A status patch reaches the watch (and Kopf's indexes) a moment after it is sent, so right
    after a write the watch is behind and what was written is the truth. But the object may have
    changed since: another replica wrote it while this one stood by (Kopf peering), and then what
    this one wrote last is stale, and reconciling from it undoes the other's work (a rollout
    started over from a promotion long past, history lost). The resourceVersions tell the two
    apart: `written_at` is the one the write returned, `observed_at` the watched object's, and
    the watch has caught up once it shows that version or a later one. etcd's revisions only
    grow; a version that is not a number (another storage) keeps what was written, as before.
    """
    if written is None:
        return observed
    if _revision(observed_at) >= _revision(written_at) >= 0:
        return observed
    return written


def _revision(resource_version: str | None) -> int:
    return int(resource_version) if resource_version and resource_version.isdigit() else -1
