"""Whether another replica shares the peering: what decides if deployments are read live first."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.kube.peers import others_in

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
