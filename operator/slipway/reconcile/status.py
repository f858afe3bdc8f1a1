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
