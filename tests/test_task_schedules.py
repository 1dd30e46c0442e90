"""The pure schedule rules (headrace.tasks.schedules): no clock, no loop, whole years walked.

Every count below is worked out by hand for the calendar year 2026 (Thursday 1 January,
365 days, 261 weekdays, 52 Sundays, 52 Fridays, Friday the 13th in February, March and
November).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from headrace.tasks.schedules import (
    CatchUp,
    Crontab,
    Interval,
    InvalidSchedule,
    Schedule,
    cron,
    crontab,
    due_slots,
    latest_slot,
    next_slots,
    parse_schedule,
    slot_label,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def at(tz: tzinfo, *fields: int, fold: int = 0) -> float:
    return datetime(*fields, tzinfo=tz, fold=fold).timestamp()  # type: ignore[misc]


def local(instant: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(instant, tz).isoformat()


def year_of_slots(schedule: Schedule, tz: tzinfo, year: int = 2026) -> list[float]:
    """Every slot from local midnight of 1 January to that of the next year."""
    start, end = at(tz, year, 1, 1) - 1, at(tz, year + 1, 1, 1) - 1
    found = []
    when = start
    while True:
        slot = schedule.next_after(when, tz)
        if slot is None or slot > end:
            return found
        found.append(slot)
        when = slot


# -- a simulated year of every kind ---------------------------------------------------------------

YEAR_COUNTS: list[tuple[str, Any, int]] = [
    ("the seed's daily 07:00", crontab(hour=7, minute=0), 365),
    ("every 15 minutes", crontab(minute="*/15"), 365 * 96),
    ("hourly, office hours, weekdays", crontab(minute=0, hour="9-17", day_of_week="mon-fri"), 2349),
    ("twice a day from sets and lists", crontab(minute={0, 30}, hour=[6]), 730),
    ("Sundays by number (0 = Sunday)", crontab(minute=0, hour=0, day_of_week=0), 52),
    ("Sundays by name", crontab(minute=0, hour=0, day_of_week="sunday"), 52),
    ("a wrapping range fri-mon", crontab(minute=0, hour=0, day_of_week="fri-mon"), 208),
    ("first of the month", crontab(minute=0, hour=0, day_of_month=1), 12),
    ("1st and 15th", crontab(minute=0, hour=0, day_of_month="1,15"), 24),
    ("Celery: Friday AND the 13th", crontab(0, 0, day_of_week="fri", day_of_month=13), 3),
    ("January and July only", crontab(0, 0, day_of_month=1, month_of_year="jan,jul"), 2),
    ("a step over a range", crontab(minute=0, hour="8-18/5"), 3 * 365),
    ("a start with a step", crontab(minute="50/5", hour=12), 2 * 365),
    ("Feb 29 (none in 2026)", crontab(0, 0, day_of_month=29, month_of_year=2), 0),
    ("cron: daily 02:30", cron("30 2 * * *"), 365),
    ("cron: 13th OR Friday", cron("0 0 13 * 5"), 12 + 52 - 3),
    ("cron: 7 is Sunday too", cron("0 0 * * 7"), 52),
    ("cron: names", cron("0 0 * JAN-MAR MON"), 13),
    ("cron: @hourly", cron("@hourly"), 8760),
    ("cron: @daily", cron("@daily"), 365),
    ("cron: @weekly (Sunday midnight)", cron("@weekly"), 52),
    ("cron: @monthly", cron("@monthly"), 12),
    ("cron: @yearly", cron("@yearly"), 1),
    ("every 5 minutes", Interval.of(timedelta(minutes=5)), 105120),
    ("every hour", Interval.of(timedelta(hours=1)), 8760),
    ("every day, as seconds", Interval.of(86400), 365),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("label", "schedule", "count"), YEAR_COUNTS, ids=[c[0] for c in YEAR_COUNTS]
)
def test_a_simulated_year_fires_each_kind_the_right_number_of_times(
    label: str, schedule: Schedule, count: int
) -> None:
    slots = year_of_slots(schedule, UTC)
    assert len(slots) == count
    assert len(set(slots)) == len(slots)
    assert slots == sorted(slots)
    assert all(slot == int(slot) for slot in slots)  # whole seconds, as job ids need


def test_feb_29_fires_in_leap_years_only() -> None:
    leap = crontab(0, 0, day_of_month=29, month_of_year="feb")
    assert [local(s, UTC) for s in year_of_slots(leap, UTC, 2028)] == ["2028-02-29T00:00:00+00:00"]
    # AND with a weekday: Feb 29 is a Tuesday in 2028, next a Monday in 2044.
    monday = crontab(0, 0, day_of_week="mon", day_of_month=29, month_of_year=2)
    assert local(monday.next_after(at(UTC, 2026, 1, 1), UTC) or 0, UTC).startswith("2044-02-29")


def test_slots_land_on_the_named_wall_clock_time() -> None:
    [first, second] = next_slots(
        crontab(hour=7, minute=0), PARIS, after=at(PARIS, 2026, 1, 1), count=2
    )
    assert local(first, PARIS) == "2026-01-01T07:00:00+01:00"
    assert local(second, PARIS) == "2026-01-02T07:00:00+01:00"
    weekdays = next_slots(cron("0 9 * * 1-5"), UTC, after=at(UTC, 2026, 1, 2, 10), count=2)
    assert [local(s, UTC) for s in weekdays] == [
        "2026-01-05T09:00:00+00:00",  # Friday 10:00 -> Monday
        "2026-01-06T09:00:00+00:00",
    ]


def test_intervals_are_anchored_at_the_epoch_so_every_process_agrees() -> None:
    every = Interval.of(timedelta(minutes=10))
    assert every.next_after(1_000_000_001.5, UTC) == 1_000_000_200.0
    assert every.next_after(1_000_000_200.0, UTC) == 1_000_000_800.0  # strictly after


# -- daylight saving time -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "spring", "autumn", "hour"),
    [
        (PARIS, date(2026, 3, 29), date(2026, 10, 25), 2),  # 02:00->03:00; 03:00->02:00
        (NEW_YORK, date(2026, 3, 8), date(2026, 11, 1), 2),  # 02:00->03:00; 02:00->01:00
        (NEW_YORK, date(2026, 3, 8), date(2026, 11, 1), 1),  # 01:30 happens twice there
    ],
    ids=["paris-02:30", "new-york-02:30", "new-york-01:30"],
)
def test_a_daily_job_fires_once_a_day_across_both_dst_changes(
    tz: ZoneInfo, spring: date, autumn: date, hour: int
) -> None:
    daily = crontab(hour=hour, minute=30)
    slots = year_of_slots(daily, tz)
    days = Counter(datetime.fromtimestamp(s, tz).date() for s in slots)
    assert len(slots) == 365
    assert set(days.values()) == {1}
    by_day = {datetime.fromtimestamp(s, tz).date(): s for s in slots}
    spring_slot = datetime.fromtimestamp(by_day[spring], tz)
    if hour == 2:  # 02:30 does not exist that day: the first instant after the gap
        assert spring_slot.strftime("%H:%M%z") == "03:00" + spring_slot.strftime("%z")
        assert spring_slot.utcoffset() != datetime(2026, 1, 1, tzinfo=tz).utcoffset()
    else:
        assert spring_slot.strftime("%H:%M") == "01:30"
    autumn_slot = by_day[autumn]
    assert datetime.fromtimestamp(autumn_slot, tz).strftime("%H:%M") == f"0{hour}:30"
    # The first of the two 01:30s (summer time) where the time happens twice.
    assert autumn_slot == at(tz, autumn.year, autumn.month, autumn.day, hour, 30, fold=0)


def test_an_every_hour_schedule_follows_real_time_across_dst() -> None:
    quarter = cron("*/15 * * * *")
    spring = next_slots(quarter, PARIS, after=at(PARIS, 2026, 3, 29, 1, 40), count=3)
    assert [local(s, PARIS) for s in spring] == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 15 real minutes later: the hour 02:xx does not exist
        "2026-03-29T03:15:00+02:00",
    ]
    autumn = next_slots(quarter, PARIS, after=at(PARIS, 2026, 10, 25, 2, 40), count=3)
    assert [local(s, PARIS) for s in autumn] == [
        "2026-10-25T02:45:00+02:00",
        "2026-10-25T02:00:00+01:00",  # the repeated hour runs too
        "2026-10-25T02:15:00+01:00",
    ]
    for day, count in ((date(2026, 3, 29), 92), (date(2026, 10, 25), 100)):
        before, after = day - timedelta(days=1), day + timedelta(days=1)
        slots = next_slots(quarter, PARIS, after=at(PARIS, *before.timetuple()[:3]) - 1, count=400)
        days = Counter(datetime.fromtimestamp(s, PARIS).date() for s in slots)
        assert (days[before], days[day], days[after]) == (96, count, 96)


def test_intervals_ignore_dst() -> None:
    hourly = Interval.of(3600)
    slots = next_slots(hourly, PARIS, after=at(PARIS, 2026, 3, 29, 0, 30), count=3)
    assert [b - a for a, b in itertools.pairwise(slots)] == [3600.0, 3600.0]


# -- which slots fire after a pause ---------------------------------------------------------------


def test_catch_up_latest_fires_only_the_most_recent_missed_slot() -> None:
    hourly = crontab(minute=0)
    last = at(UTC, 2026, 5, 1, 10)
    now = at(UTC, 2026, 5, 1, 15, 20)
    assert due_slots(hourly, UTC, after=last, now=now) == [at(UTC, 2026, 5, 1, 15)]
    assert due_slots(hourly, UTC, after=last, now=now, catch_up=CatchUp.LATEST) == [
        at(UTC, 2026, 5, 1, 15)
    ]


def test_catch_up_all_fires_every_missed_slot_oldest_first() -> None:
    hourly = crontab(minute=0)
    last = at(UTC, 2026, 5, 1, 10)
    now = at(UTC, 2026, 5, 1, 15, 20)
    assert due_slots(hourly, UTC, after=last, now=now, catch_up=CatchUp.ALL) == [
        at(UTC, 2026, 5, 1, h) for h in (11, 12, 13, 14, 15)
    ]


def test_catch_up_all_is_bounded_per_call() -> None:
    every = Interval.of(1)
    slots = due_slots(every, UTC, after=0.0, now=5000.0, catch_up=CatchUp.ALL)
    assert slots == [float(s) for s in range(1, 1001)]
    assert due_slots(every, UTC, after=slots[-1], now=5000.0, catch_up=CatchUp.ALL)[0] == 1001.0


def test_catch_up_none_fires_only_a_slot_still_on_time() -> None:
    hourly = crontab(minute=0)
    last = at(UTC, 2026, 5, 1, 10)
    late = at(UTC, 2026, 5, 1, 15, 20)
    assert due_slots(hourly, UTC, after=last, now=late, catch_up=CatchUp.NONE) == []
    on_time = at(UTC, 2026, 5, 1, 15, 0, 30)
    assert due_slots(hourly, UTC, after=last, now=on_time, catch_up=CatchUp.NONE) == [
        at(UTC, 2026, 5, 1, 15)
    ]
    assert due_slots(hourly, UTC, after=last, now=late, catch_up=CatchUp.NONE, grace=3600) == [
        at(UTC, 2026, 5, 1, 15)
    ]


def test_nothing_is_due_before_the_next_slot() -> None:
    hourly = crontab(minute=0)
    last = at(UTC, 2026, 5, 1, 10)
    for mode in CatchUp:
        assert due_slots(hourly, UTC, after=last, now=last + 3599, catch_up=mode) == []


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (crontab(minute=0, hour=7), ["2024-03-03T07:00", "2024-06-30T07:00", "2026-02-01T07:00"]),
        (crontab(minute="*/5"), ["2024-03-03T09:00", "2024-07-01T00:00", "2026-02-02T02:00"]),
        (cron("0 0 1 1 *"), [None, None, "2026-01-01T00:00"]),
        (
            Interval.of(timedelta(hours=5)),
            ["2024-03-03T05:00", "2024-07-01T00:00", "2026-02-02T01:00"],
        ),
    ],
    ids=["daily", "5-minutes", "yearly", "5-hours"],
)
def test_latest_slot_finds_the_last_slot_whatever_the_gap(
    schedule: Schedule, expected: list[str | None]
) -> None:
    after = at(UTC, 2024, 3, 3, 3, 3)
    found = [
        latest_slot(schedule, UTC, after=after, until=until)
        for until in (at(UTC, 2024, 3, 3, 9), at(UTC, 2024, 7, 1), at(UTC, 2026, 2, 2, 2, 2))
    ]
    assert [None if s is None else local(s, UTC)[:16] for s in found] == expected
    assert latest_slot(schedule, UTC, after=after, until=after) is None


def test_catch_up_values_are_checked() -> None:
    assert CatchUp.parse("all") is CatchUp.ALL
    with pytest.raises(InvalidSchedule, match="catch_up must be one of 'latest', 'all', 'none'"):
        CatchUp.parse("some")


def test_slot_labels_are_utc_and_fit_a_job_id() -> None:
    assert slot_label(at(PARIS, 2026, 12, 2, 8)) == "20261202T070000Z"


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        (
            crontab(day_of_month=31, month_of_year=2),
            "day_of_month 31 never falls in month_of_year 2",
        ),
        (crontab(day_of_month="30-31", month_of_year="feb"), "never falls in month_of_year 2"),
        (crontab(minute=60), "minute: 60 is out of range 0-59"),
        (crontab(hour="25"), "hour: 25 is out of range 0-23"),
        (crontab(day_of_week=7), "day_of_week: 7 is out of range 0-6"),
        (crontab(day_of_week="funday"), "day_of_week: 'funday' is not a number or a name"),
        (crontab(minute="*/0"), "minute: step '0' in '*/0' is not 1 or more"),
        (crontab(minute=""), "minute: empty"),
        (crontab(minute=set()), "minute: the set is empty"),
        (crontab(minute=1.5), "minute: expected an int, a string or a set"),
        (crontab(minute=True), "minute: expected an int, a string or a set"),
        (crontab(minute=[1, None]), "minute: None in [1, None] is not an int"),
        (cron("0 7 * *"), "a cron line has five fields"),
        (cron("0 7 * 13 *"), "month_of_year: 13 is out of range 1-12"),
    ],
)
def test_a_bad_crontab_says_what_is_wrong_when_used_not_when_built(
    schedule: Crontab, problem: str
) -> None:
    assert schedule.problem is not None
    assert problem in schedule.problem
    with pytest.raises(InvalidSchedule, match=re.escape(schedule.problem)):
        schedule.next_after(0.0, UTC)


def test_cron_lines_with_both_day_fields_restricted_may_fall_on_an_impossible_date() -> None:
    # "31 February or any Monday" still has Mondays.
    assert cron("0 0 31 2 1").problem is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (timedelta(milliseconds=500), "whole number of seconds, at least 1"),
        (0, "whole number of seconds, at least 1"),
        (2.5, "whole number of seconds, at least 1"),
        (True, "expected crontab(...)"),
        (object(), "expected crontab(...)"),
    ],
)
def test_bad_schedule_values_are_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_schedule(value)


def test_settings_values_become_schedules() -> None:
    assert parse_schedule(timedelta(seconds=30)) == Interval(30)
    assert parse_schedule(30.0) == Interval(30)
    assert parse_schedule("0 7 * * *") == cron("0 7 * * *")
    daily = crontab(hour=7, minute=0)
    assert parse_schedule(daily) is daily
    assert "hour=7" in daily.describe()
    assert cron("0 7 * * *").describe() == "cron '0 7 * * *'"
    assert Interval(90).describe() == "every 0:01:30"
