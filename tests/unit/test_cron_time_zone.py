"""A TrainingSchedule's cron in a time zone (spec.timeZone), across daylight-saving changes.

Times are 2027 (after the schedules of test_trainingschedule are made): in America/New_York the
clocks jump 02:00 -> 03:00 on 14 March and go back 02:00 -> 01:00 on 7 November; in Europe/Berlin
they jump on 28 March and go back on 31 October.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from slipway.reconcile import reasons
from slipway.reconcile.cron import latest_cron_time, next_cron_time, valid_zone, zone
from tests.unit.test_trainingschedule import NAME, World, minute, spec

NY, BERLIN = "America/New_York", "Europe/Berlin"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "time_zone", "after", "expected"),
    [
        ("0 9 * * *", None, utc(2027, 1, 15, 0), utc(2027, 1, 15, 9)),  # unset: UTC
        ("0 9 * * *", "UTC", utc(2027, 1, 15, 0), utc(2027, 1, 15, 9)),
        ("0 9 * * *", BERLIN, utc(2027, 1, 15, 0), utc(2027, 1, 15, 8)),  # CET, UTC+1
        ("0 9 * * *", BERLIN, utc(2027, 7, 15, 0), utc(2027, 7, 15, 7)),  # CEST, UTC+2
        ("0 9 * * *", "Asia/Kolkata", utc(2027, 1, 15, 0), utc(2027, 1, 15, 3, 30)),  # a half-hour offset
        ("0 0 * * MON", NY, utc(2027, 1, 13, 0), utc(2027, 1, 18, 5)),  # Monday midnight in New York
        # Spring forward: 02:30 does not exist on 14 March; it fires at the jump (03:00 EDT), once.
        ("30 2 * * *", NY, utc(2027, 3, 13, 12), utc(2027, 3, 14, 7)),
        ("30 2 * * *", NY, utc(2027, 3, 14, 7), utc(2027, 3, 15, 6, 30)),
        ("0 9 * * *", NY, utc(2027, 3, 13, 15), utc(2027, 3, 14, 13)),  # 09:00 EDT: an hour earlier in UTC
        # Fall back: 01:30 happens twice on 7 November; a fixed hour fires at the first only ...
        ("30 1 * * *", NY, utc(2027, 11, 7, 0), utc(2027, 11, 7, 5, 30)),  # 01:30 EDT
        ("30 1 * * *", NY, utc(2027, 11, 7, 5, 30), utc(2027, 11, 8, 6, 30)),  # not 01:30 EST the same night
        # ... while a wildcard hour keeps its hourly rhythm through the repeated hour.
        ("30 * * * *", NY, utc(2027, 11, 7, 5, 30), utc(2027, 11, 7, 6, 30)),
        ("@hourly", NY, utc(2027, 11, 7, 5, 30), utc(2027, 11, 7, 6)),
        ("0 2 * * *", BERLIN, utc(2027, 10, 30, 12), utc(2027, 10, 31, 0)),  # 02:00 CEST, then ...
        ("0 2 * * *", BERLIN, utc(2027, 10, 31, 0), utc(2027, 11, 1, 1)),  # ... not 02:00 CET an hour later
    ],
)
def test_next_cron_time_in_a_zone(expression: str, time_zone: str | None, after: datetime, expected: datetime) -> None:
    assert next_cron_time(expression, after, time_zone) == expected


@pytest.mark.parametrize(
    ("expression", "time_zone", "now", "expected"),
    [
        ("0 9 * * *", BERLIN, utc(2027, 7, 15, 7, 0, 30), utc(2027, 7, 15, 7)),
        ("0 9 * * *", BERLIN, utc(2027, 7, 15, 6, 59), utc(2027, 7, 14, 7)),
        ("30 1 * * *", NY, utc(2027, 11, 7, 6, 45), utc(2027, 11, 7, 5, 30)),  # the repeat is not a cron time
        ("30 * * * *", NY, utc(2027, 11, 7, 6, 45), utc(2027, 11, 7, 6, 30)),
        ("30 2 * * *", NY, utc(2027, 3, 14, 7, 10), utc(2027, 3, 14, 7)),
    ],
)
def test_latest_cron_time_in_a_zone(expression: str, time_zone: str, now: datetime, expected: datetime) -> None:
    due = latest_cron_time(expression, now, time_zone)
    assert due == expected and due.tzinfo == UTC


@pytest.mark.parametrize(
    ("expression", "start", "fired"),
    [
        # The night the clocks go back: a fixed-hour schedule makes one run, an hourly one 25 over the day.
        ("30 1 * * *", utc(2027, 11, 7, 0), [utc(2027, 11, 7, 5, 30)]),
        ("30 * * * *", utc(2027, 11, 7, 4), [utc(2027, 11, 7, h, 30) for h in range(4, 24)]),
        # The night they jump: 02:30 does not exist, the run is made at the jump, one.
        ("30 2 * * *", utc(2027, 3, 14, 0), [utc(2027, 3, 14, 7)]),
    ],
)
def test_a_schedule_through_a_dst_night(expression: str, start: datetime, fired: list[datetime]) -> None:
    world = World(spec(schedule=expression, timeZone=NY), now=start, outcome="Succeeded")
    world.tick(timedelta(0))  # catches up the latest time missed since the schedule was made
    world.made.clear()
    world.run_for(timedelta(hours=20), step=timedelta(minutes=5))
    assert world.made == [f"{NAME}-cron-{minute(due)}" for due in fired]
    assert world.cond("Ready") == ("True", reasons.SCHEDULE_ACTIVE)


def test_next_schedule_time_is_reported_in_utc() -> None:
    world = World(spec(schedule="0 9 * * *", timeZone=BERLIN), now=utc(2027, 1, 15, 0))
    world.tick()
    assert world.status["nextScheduleTime"] == "2027-01-15T08:00:00Z"


def test_an_unknown_zone_is_a_false_ready_condition_naming_the_field() -> None:
    world = World(spec(schedule="0 9 * * *", timeZone="Mars/Olympus_Mons"), now=utc(2027, 1, 15, 0))
    world.run_for(timedelta(days=2), step=timedelta(minutes=30))
    assert world.made == []
    assert world.cond("Ready") == ("False", reasons.INVALID_TIME_ZONE)
    assert [reason for reason, _ in world.events] == [reasons.INVALID_TIME_ZONE]  # one warning, not one per tick
    assert "spec.timeZone 'Mars/Olympus_Mons' is not an IANA time zone name" in world.events[0][1]
    assert "nextScheduleTime" not in world.status


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        *[(name, True) for name in (None, "UTC", NY, "America/Argentina/Buenos_Aires", "Etc/GMT+5")],
        *[(name, False) for name in ("Mars/Olympus_Mons", "America/New_york", "Europe")],
    ],
)
def test_valid_zone(name: str | None, valid: bool) -> None:
    assert valid_zone(name) is valid
    if not valid:
        with pytest.raises(ValueError, match="is not an IANA time zone name"):
            zone(name)


@pytest.mark.parametrize("name", ["", "Europe/../etc", "/Berlin", "Europe Berlin", "x" * 65])
def test_the_schema_refuses_what_is_not_shaped_like_a_zone_name(name: str) -> None:
    with pytest.raises(ValidationError, match=r"time_zone|timeZone"):
        spec(schedule="0 9 * * *", timeZone=name)
