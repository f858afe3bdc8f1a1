"""Status writes happen only on change; conditions keep their transition times."""

from __future__ import annotations

from slipway.api.base import Condition
from slipway.api.modeldeployment import ModelDeploymentStatus
from slipway.reconcile.conditions import set_condition
from slipway.reconcile.status import fresher_status, status_patch


def test_no_patch_when_nothing_changed() -> None:
    desired = ModelDeploymentStatus(phase="Stable", stable_version=3, url="http://x")
    current = desired.model_dump(by_alias=True, exclude_none=True)
    assert status_patch(current, desired) is None


def test_patch_holds_only_changed_fields_and_clears_dropped_ones() -> None:
    current = {"phase": "Progressing", "candidateVersion": 4, "canaryWeight": 100, "url": "http://x", "kopf": {}}
    desired = ModelDeploymentStatus(phase="Stable", stable_version=4, url="http://x")
    patch = status_patch(current, desired)
    assert patch is not None
    assert patch["phase"] == "Stable" and patch["stableVersion"] == 4 and patch["canaryWeight"] == 0
    assert patch["candidateVersion"] is None  # merge-patch null removes it
    assert "url" not in patch
    assert "kopf" not in patch  # fields we do not own are left alone


def test_what_was_written_wins_only_until_the_watch_catches_up() -> None:
    written, older = {"phase": "Degraded", "stableVersion": 3}, {"phase": "RollingBack", "stableVersion": 3}
    assert fresher_status(None, None, older, "7") is older  # nothing written by this replica
    assert fresher_status(written, "12", older, "11") is written  # the watch lags behind the write
    assert fresher_status(written, "12", written, "12") is written  # the watch shows the write
    # Another replica wrote since (this one stood by, Kopf peering): what this one wrote is stale.
    theirs = {"phase": "Stable", "stableVersion": 4, "history": [{"version": 4, "outcome": "Promoted"}]}
    assert fresher_status(written, "12", theirs, "40") is theirs
    # A storage whose versions are not numbers: what was written is kept, as before.
    assert fresher_status(written, "a1", theirs, "b2") is written
    assert fresher_status(written, "12", theirs, None) is written


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    conditions = set_condition([], "Ready", "False", "A", "first", 1, "t1")
    conditions = set_condition(conditions, "Ready", "False", "B", "second", 2, "t2")
    assert conditions[0].last_transition_time == "t1"
    assert (conditions[0].reason, conditions[0].message, conditions[0].observed_generation) == ("B", "second", 2)
    conditions = set_condition(conditions, "Ready", "True", "C", "third", 2, "t3")
    assert conditions[0].last_transition_time == "t3"


def test_conditions_are_one_per_type_and_sorted() -> None:
    conditions = [Condition(type="Z", status="True"), Condition(type="A", status="True")]
    conditions = set_condition(conditions, "M", "Unknown", "R", "m", None, "t")
    conditions = set_condition(conditions, "Z", "False", "R", "m", None, "t")
    assert [c.type for c in conditions] == ["A", "M", "Z"]
