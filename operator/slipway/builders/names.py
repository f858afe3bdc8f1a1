"""Deterministic child names: the same parent always yields the same child, so retries never duplicate."""

from __future__ import annotations

import hashlib


def child_name(base: str, suffix: str, limit: int) -> str:
    """`base-suffix`, shortened with a stable hash when it would exceed `limit` characters."""
    name = f"{base}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-')}-{digest}-{suffix}"
