"""Cron expressions in time zones (exec_api.services.cron): the planned instants across DST
changes, month ends and odd offsets, and the errors that name the field."""

from __future__ import annotations

import datetime as dt
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from exec_api.services.cron import ScheduleInputError, check_cron, check_zone, planned

UTC = dt.UTC


def local(expr: str, zone: str, after_local: str, n: int) -> list[str]:
    """The next n planned instants after a local wall-clock time, as local ISO times."""
    z = ZoneInfo(zone)
    start = dt.datetime.fromisoformat(after_local).replace(tzinfo=z).astimezone(UTC)
    out = islice(planned(expr, z, start.replace(tzinfo=None)), n)
    return [t.replace(tzinfo=UTC).astimezone(z).isoformat() for t in out]


def test_a_time_in_the_spring_gap_runs_at_the_instant_it_names():
    # Europe/Berlin, 2026-03-29: 02:00 CET -> 03:00 CEST. 02:30 does not exist that day.
    assert local("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00", 3) == [
        "2026-03-29T03:30:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_times_in_the_gap_and_the_real_times_they_shift_onto_run_once_each():
    assert local("*/30 * * * *", "America/New_York", "2026-03-08T01:00", 5) == [
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00",  # 02:00 (gap) and the real 03:00: one instant
        "2026-03-08T03:30:00-04:00",
        "2026-03-08T04:00:00-04:00",
        "2026-03-08T04:30:00-04:00",
    ]


def test_the_repeated_autumn_hour_runs_once():
    # Europe/Berlin, 2026-10-25: 03:00 CEST -> 02:00 CET; 02:00-02:59 happens twice.
    assert local("15 2 * * *", "Europe/Berlin", "2026-10-24T12:00", 2) == [
        "2026-10-25T02:15:00+02:00",
        "2026-10-26T02:15:00+01:00",
    ]
    hourly = local("0 * * * *", "Europe/Berlin", "2026-10-25T00:30", 4)
    assert hourly == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]


def test_a_half_hour_dst_change():
    # Australia/Lord_Howe moves its clocks by 30 minutes (02:00 -> 02:30 on 2026-10-04).
    assert local("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00", 2) == [
        "2026-10-04T02:45:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]


def test_month_ends_and_leap_days():
    assert local("0 12 31 * *", "UTC", "2027-01-01T00:00", 3) == [
        "2027-01-31T12:00:00+00:00",
        "2027-03-31T12:00:00+00:00",
        "2027-05-31T12:00:00+00:00",
    ]
    assert local("0 0 29 2 *", "UTC", "2027-01-01T00:00", 2) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Asia/Kolkata", "2026-06-01T09:00:00+05:30"),
        ("Pacific/Chatham", "2026-06-01T09:00:00+12:45"),
        ("America/St_Johns", "2026-06-01T09:00:00-02:30"),
    ],
)
def test_odd_offsets(zone, expected):
    assert local("0 9 * * *", zone, "2026-06-01T00:00", 1) == [expected]


def test_instants_strictly_after_the_start_and_increasing():
    z = ZoneInfo("Europe/Berlin")
    start = dt.datetime(2026, 3, 29, 0, 59)
    got = list(islice(planned("* * * * *", z, start), 180))
    assert got[0] == dt.datetime(2026, 3, 29, 1, 0)
    assert all(b - a == dt.timedelta(minutes=1) for a, b in zip(got, got[1:], strict=False))


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("0 * * * * *", "has 6"),
        ("* * * *", "has 4"),
        ("", "has 0"),
        ("61 * * * *", "not a valid cron expression"),
        ("* 25 * * *", "not a valid cron expression"),
        ("* * 32 * *", "not a valid cron expression"),
        ("* * * 13 *", "not a valid cron expression"),
        ("hello world foo bar baz", "not a valid cron expression"),
        ("R * * * *", "random (R) and hashed (H)"),
        ("0 H * * *", "random (R) and hashed (H)"),
        ("H/15 * * * *", "random (R) and hashed (H)"),
    ],
)
def test_a_bad_expression_names_the_field_and_why(expr, words):
    with pytest.raises(ScheduleInputError) as e:
        check_cron(expr)
    assert e.value.field == "cron" and words in str(e.value)


def test_expressions_are_normalised():
    assert check_cron("  */5   *  * * 1-5 ") == "*/5 * * * 1-5"


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "", "../../etc/passwd", "/etc/localtime", "UTC+1", "America"]
)
def test_a_zone_that_does_not_exist_names_the_field(zone):
    with pytest.raises(ScheduleInputError) as e:
        check_zone(zone)
    assert e.value.field == "timezone" and "IANA" in str(e.value)


def test_month_and_day_names_are_not_taken_for_random_fields():
    assert check_cron("0 6 * MAR THU") == "0 6 * MAR THU"
