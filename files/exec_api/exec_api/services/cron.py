"""Cron expressions in a time zone: the instants a schedule is planned for.

croniter (pallets-eco, maintained) walks the calendar of a five-field expression in naive local
wall-clock time; zoneinfo turns each local time into an instant. The rules where the wall clock
is not simple, as Python's datetime defines them (PEP 495, ``fold=0``):

* a local time that does not exist (the hour skipped when clocks go forward) is planned for the
  instant it names with the offset before the change: ``30 2 * * *`` in Europe/Berlin on the
  last Sunday of March runs at 03:30 CEST; a run is never lost to a gap;
* a local time that happens twice (the hour repeated when clocks go back) is planned once, for
  its first occurrence;
* instants are strictly increasing: two local times that name the same instant (a gap time and
  the real time it shifts onto) are one planned time.

Instants are naive UTC datetimes, as every timestamp the exec API stores.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

FIELDS = "minute hour day-of-month month day-of-week"
# Gaps and folds are at most a few hours long: the walk starts this far before `after` in
# local time, so a local time shifted onto an instant after `after` is not missed.
_LOOKBACK = dt.timedelta(hours=3)


class ScheduleInputError(ValueError):
    """Bad input for a schedule; ``field`` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def check_cron(expr: str) -> str:
    """The expression, single-spaced; ScheduleInputError naming ``cron`` when it is not one."""
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleInputError(
            "cron",
            f"a cron expression has five fields ({FIELDS}); {expr!r} has {len(fields)}",
        )
    normal = " ".join(fields)
    if any(re.match(r"[RrHh](\(|/|$)", part) for f in fields for part in f.split(",")):
        raise ScheduleInputError(
            "cron",
            f"{expr!r}: random (R) and hashed (H) fields are not supported; name the times",
        )
    try:
        croniter(normal, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except (CroniterError, ValueError, KeyError) as e:
        raise ScheduleInputError("cron", f"{expr!r} is not a valid cron expression: {e}") from e
    return normal


def check_zone(name: str) -> ZoneInfo:
    """The IANA time zone; ScheduleInputError naming ``timezone`` when there is no such zone."""
    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as e:  # OSError: a directory (America)
        raise ScheduleInputError(
            "timezone", f"no time zone {name!r}: give an IANA name such as UTC or Europe/Berlin"
        ) from e


def planned(expr: str, zone: ZoneInfo, after: dt.datetime) -> Iterator[dt.datetime]:
    """The instants (naive UTC) the expression plans in ``zone`` strictly after ``after``."""
    utc = dt.UTC
    local_after = after.replace(tzinfo=utc).astimezone(zone).replace(tzinfo=None)
    walk = croniter(expr, local_after - _LOOKBACK)
    last = after
    while True:
        local: dt.datetime = walk.get_next(dt.datetime)
        instant = local.replace(tzinfo=zone, fold=0).astimezone(utc).replace(tzinfo=None)
        if instant > last:
            last = instant
            yield instant


def next_after(expr: str, zone: ZoneInfo, after: dt.datetime) -> dt.datetime:
    return next(planned(expr, zone, after))
