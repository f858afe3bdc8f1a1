"""The progress-deadline watch (handlers/deadlines.py): which waiting deployments are due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from slipway.api.defaults import OperatorDefaults
from slipway.handlers.deadlines import Deadlines, deadline_of
from slipway.handlers.modeldeployment import DeploymentRecord
from slipway.reconcile import reasons
from slipway.reconcile.rollout import Commands
from tests.support import contract_manifests

SPEC = contract_manifests()[2]["spec"]
STARTED = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
WAITING = {
    "phase": "Progressing",
    "reason": reasons.WAITING_FOR_CANDIDATE,
    "candidateVersion": "2",
    "rolloutStartedAt": STARTED.isoformat().replace("+00:00", "Z"),
}
DEFAULTS = OperatorDefaults()


def record(status: dict[str, Any], version: str = "1", spec: dict[str, Any] = SPEC) -> DeploymentRecord:
    return DeploymentRecord({}, 1, spec, status, Commands(), version)


def test_a_waiting_candidate_is_given_up_at_the_progress_deadline() -> None:
    assert deadline_of(record(WAITING), DEFAULTS) == STARTED + timedelta(minutes=10)


def test_only_a_wait_for_the_candidate_has_a_deadline_here() -> None:
    assert deadline_of(record({}), DEFAULTS) is None
    assert deadline_of(record({**WAITING, "phase": "Succeeded"}), DEFAULTS) is None
    assert deadline_of(record({**WAITING, "previousVersion": "1"}), DEFAULTS) is None  # the rollout tick's
    assert deadline_of(record({k: v for k, v in WAITING.items() if k != "rolloutStartedAt"}), DEFAULTS) is None
    assert deadline_of(record(WAITING, spec={}), DEFAULTS) is None  # refused by its own reconcile
    assert deadline_of(record({**WAITING, "phase": "Bogus"}), DEFAULTS) is None


def test_due_lists_the_deployments_past_their_deadline_and_forgets_deleted_ones() -> None:
    deadlines = Deadlines()
    index = {("ml", "churn"): [record(WAITING)], ("ml", "fraud"): [record({})], ("ml", "gone"): []}
    deadline = STARTED + timedelta(minutes=10)
    assert deadlines.due(index, DEFAULTS, deadline - timedelta(seconds=1)) == []
    assert deadlines.due(index, DEFAULTS, deadline) == [("ml", "churn")]
    ready = {"phase": "Stable", "stableVersion": "2"}
    assert deadlines.due({("ml", "churn"): [record(ready, version="2")]}, DEFAULTS, deadline) == []
    assert deadlines.due({}, DEFAULTS, deadline) == [] and not deadlines._parsed


def test_a_record_is_parsed_again_only_when_its_version_changed() -> None:
    deadlines = Deadlines()
    deadline = STARTED + timedelta(minutes=10)
    assert deadlines.due({("ml", "churn"): [record(WAITING)]}, DEFAULTS, deadline) == [("ml", "churn")]
    # Same resourceVersion: the parsed deadline stands (a record changes only with its version).
    assert deadlines.due({("ml", "churn"): [record({}, version="1")]}, DEFAULTS, deadline) == [("ml", "churn")]
    assert deadlines.due({("ml", "churn"): [record({}, version="2")]}, DEFAULTS, deadline) == []
