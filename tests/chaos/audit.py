"""What the operator replicas wrote, read from the API server's audit log (one JSON event a line)."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

WRITES = {"create", "update", "patch", "delete"}
# Kopf's own keep-alives and the events it posts are bookkeeping, not actions on the platform.
BOOKKEEPING = {"clusterkopfpeerings", "kopfpeerings", "events"}


@dataclass(frozen=True)
class Write:
    at: float  # seconds since the epoch, when the API server answered
    user: str
    verb: str
    resource: str  # plural[/subresource]
    namespace: str
    name: str
    code: int

    @property
    def target(self) -> str:
        return f"{self.resource} {self.namespace}/{self.name}"

    @property
    def created(self) -> bool:
        """A create, or a server-side apply that made the object (201)."""
        return self.code == 201


def writes(log: Path, users: set[str]) -> list[Write]:
    """The successful writes by `users` to anything but Kopf's bookkeeping, oldest first."""
    found = []
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        event: dict[str, Any] = json.loads(line)
        ref, user = event.get("objectRef") or {}, event.get("user", {}).get("username", "")
        code = int((event.get("responseStatus") or {}).get("code", 0))
        if event.get("stage") != "ResponseComplete" or user not in users or event.get("verb") not in WRITES:
            continue
        if ref.get("resource") in BOOKKEEPING or not 200 <= code < 300:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        at = datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")).timestamp()
        found.append(Write(at, user, event["verb"], resource, ref.get("namespace", ""), ref.get("name", ""), code))
    return sorted(found, key=lambda w: w.at)


def twice_created(found: list[Write]) -> dict[str, int]:
    """Objects created more than once (a duplicate child), with no delete of theirs in between."""
    created: Counter[str] = Counter()
    deleted: set[str] = set()
    twice = {}
    for write in found:
        if write.verb == "delete":
            deleted.add(write.target)
        elif write.created:
            created[write.target] += 1
            if created[write.target] > 1 and write.target not in deleted:
                twice[write.target] = created[write.target]
    return twice


def concurrent(found: list[Write], within: float) -> list[tuple[Write, Write]]:
    """Pairs of writes to one object by two different users less than `within` seconds apart."""
    by_target: dict[str, list[Write]] = defaultdict(list)
    for write in found:
        by_target[write.target].append(write)
    pairs = []
    for target_writes in by_target.values():
        for earlier, later in itertools.pairwise(target_writes):
            if earlier.user != later.user and later.at - earlier.at < within:
                pairs.append((earlier, later))
    return pairs
