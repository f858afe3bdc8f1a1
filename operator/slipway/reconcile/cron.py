"""Cron times in a time zone (a TrainingSchedule's spec.schedule and spec.timeZone), pure.

The expression is read in the zone's wall-clock time (croniter over zoneinfo); times come back in
UTC. Across daylight-saving changes, as Vixie cron does: a wall-clock time the clocks skip (02:30
when they jump from 02:00 to 03:00) fires at the jump, and a time they repeat (01:30 when they go
back from 02:00 to 01:00) fires once when the expression names a fixed hour, while an expression
with a wildcard hour (`30 * * * *`, @hourly) keeps its hourly rhythm through the repeated hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


def valid_cron(expression: str) -> bool:
    return bool(croniter.is_valid(expression)) and (expression.startswith("@") or len(expression.split()) == 5)


def zone(name: str | None) -> tzinfo:
    """The IANA zone of that name (UTC when unset); ValueError for a name the zone database lacks."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:  # a malformed key, a directory (Europe)
        raise ValueError(f"{name!r} is not an IANA time zone name") from error


def valid_zone(name: str | None) -> bool:
    try:
        zone(name)
    except ValueError:
        return False
    return True


def _fixed_hour(expression: str) -> bool:
    if expression.startswith("@"):
        return expression != "@hourly"
    return not expression.split()[1].startswith("*")


def _repeated(moment: datetime, where: tzinfo, expression: str) -> bool:
    """The second occurrence of a fixed-hour wall-clock time, in the hour the clocks go back:
    the first one, an hour before, already fired."""
    local = moment.astimezone(where)
    return bool(local.fold) and _fixed_hour(expression) and local.replace(fold=0).utcoffset() != local.utcoffset()


def latest_cron_time(expression: str, now: datetime, time_zone: str | None = None) -> datetime:
    """The latest time at or before `now` that the expression names in the zone (minute resolution), in UTC."""
    where = zone(time_zone)
    minute = now.replace(second=0, microsecond=0)
    times = croniter(expression, (minute + timedelta(seconds=1)).astimezone(where))
    previous: datetime = times.get_prev(datetime)
    while _repeated(previous, where, expression):
        previous = times.get_prev(datetime)
    return previous.astimezone(UTC)


def next_cron_time(expression: str, now: datetime, time_zone: str | None = None) -> datetime:
    """The first time after `now` that the expression names in the zone, in UTC."""
    where = zone(time_zone)
    times = croniter(expression, now.astimezone(where))
    following: datetime = times.get_next(datetime)
    while _repeated(following, where, expression):
        following = times.get_next(datetime)
    return following.astimezone(UTC)
