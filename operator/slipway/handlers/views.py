"""Reading Kopf's indexes from handler threads.

Kopf updates an index on its event loop while sync handlers run in threads: iterating an index
entry in Python code (a for loop, a comprehension) can meet it mid-change ("dictionary changed
size during iteration", seen at 2,000 parents in bench/operator_scale.py). `tuple()` copies an
entry in one step under the GIL.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any


def entries(index: Mapping[Hashable, Any], key: Hashable) -> tuple[Any, ...]:
    """A copy of the index's values under `key` (none if it has none)."""
    return tuple(index.get(key, ()))
