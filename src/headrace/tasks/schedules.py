"""When a periodic task is due: crontabs, cron strings and intervals, as pure values.

Nothing here reads a clock or runs a loop; every function takes the instants it works on
(seconds since the epoch) and the time zone wall-clock schedules are read in, so the whole
year of a schedule can be walked in a test. :mod:`headrace.tasks.beat` runs them.

Three kinds, all answering :meth:`Schedule.next_after`:

``crontab(minute, hour, day_of_week, day_of_month, month_of_year)``
    Celery's meaning: each field an int, a set of ints, or a string such as ``"*"``,
    ``"*/15"``, ``"1-5"``, ``"mon-fri"``, ``"0,30"``; day_of_week counts from 0 = Sunday;
    every field must match (day of month *and* day of week, as in Celery).
``cron("0 7 * * mon-fri")``
    A five-field cron line (minute hour day-of-month month day-of-week; 7 is Sunday too), or
    ``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``.
    As in cron, when both day fields are restricted a day matching *either* is due.
``Interval(seconds)`` (from a ``timedelta`` or a number of seconds)
    Every so many whole seconds, on multiples of the interval since the epoch, so that every
    process computes the same instants: ``timedelta(hours=1)`` fires on the hour (UTC).

Wall-clock times and daylight saving: a crontab names wall-clock times in the given zone.
One that names a fixed hour fires once a day whatever the clocks do: a time that does not
exist (skipped when clocks go forward) fires at the first instant after the gap, and a time
that happens twice (when clocks go back) fires the first time only. A crontab whose hour
field is every hour follows real time instead: it skips the missing hour and runs in both
copies of the repeated one, so "every 15 minutes" stays every 15 minutes.

A *slot* is one instant a schedule fires at (a whole second). :func:`due_slots` decides
which slots to fire after a pause, by :class:`CatchUp`.
"""

from __future__ import annotations

import enum
import re
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final, Protocol, runtime_checkable

__all__ = [
    "CatchUp",
    "Crontab",
    "Interval",
    "InvalidSchedule",
    "Schedule",
    "cron",
    "crontab",
    "due_slots",
    "latest_slot",
    "next_slots",
    "parse_schedule",
    "slot_label",
]

#: How long after its instant a slot still counts as on time for ``catch_up="none"``.
DEFAULT_GRACE: Final = 60.0
#: The most slots one call of :func:`due_slots` returns with ``catch_up="all"``; the rest are
#: returned by the next call, since the caller then records the last one as fired.
MAX_CATCH_UP: Final = 1000

_DAY_NAMES: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_NAMES: Final = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)
_DAYS_IN_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # at most
_MINUTE: Final = timedelta(minutes=1)
_DAY: Final = timedelta(days=1)
# Time-zone offsets change by at most a few hours; within this margin of a change the order of
# wall-clock times and of instants may differ, so the search looks around it.
_MARGIN: Final = timedelta(hours=3)
_SEARCH_YEARS: Final = 29  # Feb 29 falls on a given weekday once in 28 years
_ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class InvalidSchedule(ValueError):
    """A schedule that cannot be evaluated: a bad field, an impossible date, a bad type."""


class CatchUp(enum.Enum):
    """Which missed slots fire when a scheduler finds several due at once (after downtime).

    ``LATEST`` (the default): only the most recent one. ``ALL``: each of them, oldest first.
    ``NONE``: only one still on time (at most ``grace`` seconds late), so a paused schedule
    resumes at its next slot.
    """

    LATEST = "latest"
    ALL = "all"
    NONE = "none"

    @classmethod
    def parse(cls, value: object) -> CatchUp:
        if isinstance(value, CatchUp):
            return value
        for member in cls:
            if value == member.value:
                return member
        raise InvalidSchedule(
            f"catch_up must be one of {', '.join(repr(m.value) for m in cls)}, got {value!r}"
        )


@runtime_checkable
class Schedule(Protocol):
    """What the scheduler asks of a schedule."""

    def next_after(self, when: float, tz: tzinfo) -> float | None:
        """The first slot strictly after ``when``, or None if there is none."""
        ...

    def describe(self) -> str:
        """A short human form (``manage.py tasks schedule`` shows it)."""
        ...


# -- intervals ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """Every ``seconds`` seconds (a whole number, at least one), on multiples since the epoch.

    Anchoring at the epoch rather than at a process's start is what lets any number of
    schedulers agree on the slots.
    """

    seconds: int

    def __post_init__(self) -> None:
        if type(self.seconds) is not int or self.seconds < 1:
            raise InvalidSchedule(
                f"an interval must be a whole number of seconds, at least 1, got {self.seconds!r}"
            )

    @classmethod
    def of(cls, value: timedelta | float) -> Interval:
        """From a ``timedelta`` or a number of seconds (a float must be whole)."""
        seconds = value.total_seconds() if isinstance(value, timedelta) else value
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidSchedule(f"an interval must be a timedelta or seconds, got {value!r}")
        if seconds != int(seconds) or seconds < 1:
            raise InvalidSchedule(
                f"an interval must be a whole number of seconds, at least 1, got {value!r}"
            )
        return cls(int(seconds))

    def next_after(self, when: float, tz: tzinfo) -> float | None:
        return float((int(when // self.seconds) + 1) * self.seconds)

    def latest_at_or_before(self, when: float) -> float:
        return float(int(when // self.seconds) * self.seconds)

    def describe(self) -> str:
        return f"every {timedelta(seconds=self.seconds)}"


# -- crontabs -------------------------------------------------------------------------------------


def _number(text: str, low: int, names: tuple[str, ...] | None, what: str) -> int:
    if text.isdigit():
        return int(text)
    if names is not None:
        lowered = text.lower()
        for index, name in enumerate(names):
            if lowered == name or (len(lowered) > 3 and name == lowered[:3]):
                return index + low
    raise InvalidSchedule(f"{what}: {text!r} is not a number" + (" or a name" if names else ""))


def _parse_field(
    value: object, what: str, low: int, high: int, names: tuple[str, ...] | None, *, cron: bool
) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it is unrestricted (``*``)."""
    top = 7 if cron and what == "day_of_week" else high  # cron's 7 is Sunday

    def check(number: int) -> int:
        if not low <= number <= top:
            raise InvalidSchedule(f"{what}: {number} is out of range {low}-{high}")
        return 0 if top == 7 and number == 7 else number

    if isinstance(value, bool):
        raise InvalidSchedule(f"{what}: expected an int, a string or a set, got {value!r}")
    if isinstance(value, int):
        return frozenset({check(value)}), False
    if not isinstance(value, str):
        if not isinstance(value, Iterable):
            raise InvalidSchedule(f"{what}: expected an int, a string or a set, got {value!r}")
        found: set[int] = set()
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise InvalidSchedule(f"{what}: {item!r} in {value!r} is not an int")
            found |= _parse_field(item, what, low, high, names, cron=cron)[0]
        if not found:
            raise InvalidSchedule(f"{what}: the set is empty")
        return frozenset(found), False
    text = value.strip()
    if not text:
        raise InvalidSchedule(f"{what}: empty")
    found = set()
    for part in text.split(","):
        base, slash, step_text = part.strip().partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise InvalidSchedule(f"{what}: step {step_text!r} in {part!r} is not 1 or more")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = check(_number(first.strip(), low, names, what))
            end = check(_number(last.strip(), low, names, what))
        else:
            start = check(_number(base.strip(), low, names, what))
            end = high if slash else start  # "5/15": from 5 to the end, every 15
        if start <= end:
            found.update(range(start, end + 1, step))
        else:  # a range that wraps around, e.g. "fri-mon"
            span = list(range(start, high + 1)) + list(range(low, end + 1))
            found.update(span[::step])
    return frozenset(found), text.startswith("*")


@dataclass(frozen=True, slots=True)
class Crontab:
    """Wall-clock times matching every field (see the module docstring); build it with
    :func:`crontab` or :func:`cron`.

    A bad field does not raise here: :attr:`problem` says what is wrong (so that a settings
    module still imports and the system check names the schedule entry), and evaluating the
    schedule raises :class:`InvalidSchedule` with that text.
    """

    minute: Any = "*"
    hour: Any = "*"
    day_of_week: Any = "*"
    day_of_month: Any = "*"
    month_of_year: Any = "*"
    day_or: bool = field(default=False, kw_only=True)  #: cron's rule for the two day fields
    text: str | None = field(default=None, kw_only=True)  #: the cron line it came from
    problem: str | None = field(default=None, init=False, compare=False)
    _fields: tuple[tuple[int, ...], ...] = field(default=(), init=False, repr=False, compare=False)
    _any_day: tuple[bool, bool] = field(default=(True, True), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        specs = (
            ("minute", self.minute, 0, 59, None),
            ("hour", self.hour, 0, 23, None),
            ("day_of_week", self.day_of_week, 0, 6, _DAY_NAMES),
            ("day_of_month", self.day_of_month, 1, 31, None),
            ("month_of_year", self.month_of_year, 1, 12, _MONTH_NAMES),
        )
        try:
            parsed = [
                _parse_field(value, what, low, high, names, cron=self.text is not None)
                for what, value, low, high, names in specs
            ]
            minutes, hours, dows, doms, months = (tuple(sorted(values)) for values, _ in parsed)
            if not any(d <= _DAYS_IN_MONTH[m - 1] for m in months for d in doms) and not (
                self.day_or and not parsed[2][1] and not parsed[3][1]
            ):
                raise InvalidSchedule(
                    f"no date matches: day_of_month {_listing(doms)} never falls in "
                    f"month_of_year {_listing(months)}"
                )
        except InvalidSchedule as error:
            object.__setattr__(self, "problem", str(error))
            return
        object.__setattr__(self, "_fields", (minutes, hours, dows, doms, months))
        object.__setattr__(self, "_any_day", (parsed[2][1], parsed[3][1]))

    @property
    def every_hour(self) -> bool:
        """True when the hour field allows all 24 hours (real-time rules at DST changes)."""
        return len(self._valid()[1]) == 24

    def describe(self) -> str:
        if self.text is not None:
            return f"cron {self.text!r}"
        return (
            f"crontab(minute={self.minute!r}, hour={self.hour!r}, "
            f"day_of_week={self.day_of_week!r}, day_of_month={self.day_of_month!r}, "
            f"month_of_year={self.month_of_year!r})"
        )

    def _valid(self) -> tuple[tuple[int, ...], ...]:
        if self.problem is not None:
            raise InvalidSchedule(self.problem)
        return self._fields

    # -- wall-clock search (naive datetimes, whole minutes) -----------------------------------

    def _day_matches(self, day: datetime) -> bool:
        _, _, dows, doms, _ = self._fields
        any_dow, any_dom = self._any_day
        dow = (day.weekday() + 1) % 7  # Monday is 0 in Python, 1 in cron
        dow_ok = dow in dows
        dom_ok = day.day in doms
        if self.day_or and not any_dow and not any_dom:
            return dow_ok or dom_ok
        return dow_ok and dom_ok

    def _next_wall(self, wall: datetime) -> datetime | None:
        """The first matching wall-clock minute at or after ``wall``; None within the search
        horizon (the schedule then never fires)."""
        minutes, hours, _, _, months = self._valid()
        last_year = wall.year + _SEARCH_YEARS
        while wall.year <= last_year:
            if wall.month not in months:
                index = bisect_left(months, wall.month)
                if index < len(months):
                    wall = datetime(wall.year, months[index], 1)
                else:
                    wall = datetime(wall.year + 1, months[0], 1)
                continue
            if not self._day_matches(wall):
                wall = datetime(wall.year, wall.month, wall.day) + _DAY
                continue
            if wall.hour not in hours:
                index = bisect_left(hours, wall.hour)
                day = datetime(wall.year, wall.month, wall.day)
                wall = day + timedelta(hours=hours[index]) if index < len(hours) else day + _DAY
                continue
            if wall.minute not in minutes:
                index = bisect_left(minutes, wall.minute)
                hour = wall.replace(minute=0)
                if index < len(minutes):
                    wall = hour.replace(minute=minutes[index])
                else:
                    wall = hour + timedelta(hours=1)
                continue
            return wall
        return None

    def _instants(self, wall: datetime, tz: tzinfo) -> list[float]:
        """The instants the wall-clock minute ``wall`` names in ``tz`` (none, one or two)."""
        fold0 = wall.replace(tzinfo=tz, fold=0).timestamp()
        fold1 = wall.replace(tzinfo=tz, fold=1).timestamp()
        if fold0 == fold1:
            return [fold0]
        if _wall(fold0, tz) == wall:  # it happens twice (clocks went back); fold 0 is first
            return [fold0, fold1] if self.every_hour else [fold0]
        # It does not exist (clocks went forward). Fold 0 reads it with the offset in force
        # before the change, which lands after the gap; fold 1 with the new one, before it.
        if self.every_hour:
            return []
        return [_gap_end(fold1, fold0, tz)]

    def next_after(self, when: float, tz: tzinfo) -> float | None:
        self._valid()
        start = _wall(when, tz)
        stable_start = _stable(when, tz)
        if not stable_start:
            start -= _MARGIN
        best: float | None = None
        wall: datetime | None = start
        while True:
            assert wall is not None
            wall = self._next_wall(wall)
            if wall is None:
                return best
            if best is not None and wall > _wall(best, tz) + _MARGIN:
                return best
            for instant in self._instants(wall, tz):
                if instant > when and (best is None or instant < best):
                    best = instant
            if best is not None and _stable(best, tz) and stable_start:
                return best
            wall += _MINUTE


def _listing(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def _wall(instant: float, tz: tzinfo) -> datetime:
    """The naive wall-clock minute of ``instant`` in ``tz``."""
    return datetime.fromtimestamp(instant, tz).replace(tzinfo=None, second=0, microsecond=0)


def _offset(instant: float, tz: tzinfo) -> timedelta | None:
    return datetime.fromtimestamp(instant, tz).utcoffset()


def _stable(instant: float, tz: tzinfo) -> bool:
    """No offset change within the margin around ``instant`` (wall order = instant order)."""
    margin = _MARGIN.total_seconds()
    offset = _offset(instant, tz)
    return _offset(instant - margin, tz) == offset == _offset(instant + margin, tz)


def _gap_end(before: float, after: float, tz: tzinfo) -> float:
    """The first instant with the new offset, searched between ``before`` (old offset) and
    ``after`` (new offset), to the second: the end of a gap in wall-clock time."""
    old = _offset(before, tz)
    low, high = int(before), int(after)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(middle, tz) == old:
            low = middle
        else:
            high = middle
    return float(high)


def crontab(
    minute: Any = "*",
    hour: Any = "*",
    day_of_week: Any = "*",
    day_of_month: Any = "*",
    month_of_year: Any = "*",
) -> Crontab:
    """Celery's ``crontab()``: same arguments, same meaning (see the module docstring)."""
    return Crontab(minute, hour, day_of_week, day_of_month, month_of_year)


_SPACES: Final = re.compile(r"\s+")


def cron(line: str) -> Crontab:
    """A five-field cron line, or one of the ``@daily``-style names."""
    text = _SPACES.sub(" ", line.strip())
    expanded = _ALIASES.get(text.lower(), text)
    parts = expanded.split(" ")
    if len(parts) != 5:
        bad = Crontab(text=text)
        object.__setattr__(
            bad,
            "problem",
            f"a cron line has five fields (minute hour day-of-month month day-of-week), "
            f"got {line!r}",
        )
        return bad
    minute, hour, dom, month, dow = parts
    return Crontab(minute, hour, dow, dom, month, day_or=True, text=text)


def parse_schedule(value: object) -> Schedule:
    """A schedule from what a settings entry may hold: a :class:`Crontab`, an
    :class:`Interval`, a ``timedelta``, a number of seconds or a cron line."""
    if isinstance(value, Crontab | Interval):
        return value
    if isinstance(value, timedelta) or (
        isinstance(value, int | float) and not isinstance(value, bool)
    ):
        return Interval.of(value)
    if isinstance(value, str):
        return cron(value)
    raise InvalidSchedule(
        f"expected crontab(...), a cron line, a timedelta or seconds, got {value!r}"
    )


# -- slots --------------------------------------------------------------------------------------

# The spans latest_slot() looks back over, widening until one holds a slot.
_SPANS: Final = tuple(d.total_seconds() for d in (_DAY / 24, _DAY, 32 * _DAY, 400 * _DAY))


def latest_slot(schedule: Schedule, tz: tzinfo, *, after: float, until: float) -> float | None:
    """The last slot in ``(after, until]``, or None."""
    if until <= after:
        return None
    if isinstance(schedule, Interval):
        latest = schedule.latest_at_or_before(until)
        return latest if latest > after else None
    for span in (*_SPANS, until - after):
        start = max(after, until - span)
        slot = schedule.next_after(start, tz)
        if slot is None or slot > until:
            if start == after:
                return None
            continue
        while True:
            following = schedule.next_after(slot, tz)
            if following is None or following > until:
                return slot
            slot = following
    return None  # pragma: no cover - the last span always starts at ``after``


def next_slots(schedule: Schedule, tz: tzinfo, *, after: float, count: int) -> list[float]:
    """The next ``count`` slots after ``after`` (fewer if the schedule ends)."""
    found: list[float] = []
    when = after
    while len(found) < count:
        slot = schedule.next_after(when, tz)
        if slot is None:
            break
        found.append(slot)
        when = slot
    return found


def due_slots(
    schedule: Schedule,
    tz: tzinfo,
    *,
    after: float,
    now: float,
    catch_up: CatchUp = CatchUp.LATEST,
    grace: float = DEFAULT_GRACE,
) -> list[float]:
    """The slots to fire now, oldest first: those in ``(after, now]`` that ``catch_up``
    keeps. ``after`` is the last slot fired (or, for a schedule that never fired, the
    moment the scheduler started)."""
    if catch_up is CatchUp.ALL:
        found: list[float] = []
        when = after
        while len(found) < MAX_CATCH_UP:
            slot = schedule.next_after(when, tz)
            if slot is None or slot > now:
                break
            found.append(slot)
            when = slot
        return found
    slot = latest_slot(schedule, tz, after=after, until=now)
    if slot is None or (catch_up is CatchUp.NONE and now - slot > grace):
        return []
    return [slot]


def slot_label(slot: float) -> str:
    """A slot as it appears in a job id: its UTC time, ``20261202T070000Z``."""
    return datetime.fromtimestamp(int(slot), UTC).strftime("%Y%m%dT%H%M%SZ")
