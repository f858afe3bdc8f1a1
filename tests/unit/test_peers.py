"""What a replica knows of its peers: whether another shared the peering (deployments are then
read live first), and whether one outranks it now (the deadline watch then stands by)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from slipway.kube.peers import others_in, outranked_in

MINE = 1_765_000_000_000_001
RECORD = {"lifetime": 20, "lastseen": "2026-12-06T03:00:00+00:00"}


@pytest.mark.parametrize(
    ("status", "others"),
    [
        (None, False),
        ({}, False),
        ({"me@host/1": {"priority": MINE, **RECORD}}, False),
        ({"me@host/1": {"priority": MINE, **RECORD}, "other@host/2": {"priority": MINE - 5, **RECORD}}, True),
        ({"other@host/2": {"priority": MINE + 5, **RECORD}}, True),  # a newer replica: we stand by
        ({"kopf-garbage": "not a peer"}, False),
    ],
)
def test_others_in(status: dict[str, Any] | None, others: bool) -> None:
    assert others_in(status, MINE) is others


NOW = datetime(2026, 12, 6, 3, 0, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "outranked"),
    [
        (None, False),
        ({"me@host/1": {"priority": MINE, **RECORD}}, False),
        ({"old@host/2": {"priority": MINE - 5, **RECORD}}, False),  # we outrank it
        ({"new@host/2": {"priority": MINE + 5, **RECORD}}, True),  # a newer replica works, we stand by
        ({"new@host/2": {"priority": MINE + 5, "lifetime": 5, "lastseen": "2026-12-06T03:00:00+00:00"}}, False),
        ({"new@host/2": {"priority": MINE + 5}}, True),  # no lastseen: Kopf counts it as just seen
        ({"kopf-garbage": "not a peer", "bad": {"priority": "high"}}, False),
    ],
)
def test_outranked_in_follows_kopfs_pause_rule(status: dict[str, Any] | None, outranked: bool) -> None:
    """A live peer of higher priority pauses this replica; a dead one (lastseen + lifetime past) does not."""
    assert outranked_in(status, MINE, NOW) is outranked
