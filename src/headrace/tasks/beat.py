"""The scheduler ("beat"): each slot of each periodic task fires as one job, exactly once.

::

    HEADRACE_TASKS_SCHEDULE = {
        "daily-digest": {
            "task": "blog.tasks.send_daily_digest",  # a dotted path, or the task itself
            "schedule": crontab(hour=7, minute=0),   # or "0 7 * * *", timedelta(minutes=5), 300
            "args": [], "kwargs": {},                 # JSON values
            "options": {"queue": "emails", "priority": 10, "expires": 3600},
            "catch_up": "latest",                     # or "all", "none"
        },
    }
    HEADRACE_TASKS_SCHEDULE_CATCH_UP = "latest"       # the default for every entry

``CELERY_BEAT_SCHEDULE`` is read too, with the same shape (see :mod:`headrace.tasks.compat`),
so Celery settings move over by changing the ``crontab`` import. Schedules (see
:mod:`headrace.tasks.schedules`) are read in ``TIME_ZONE``.

Why no slot fires twice: any number of schedulers may run (``runbeat``, ``runworker --beat``,
``runserver`` embedded), none of them a leader. Each computes the same slots and fires them
through the task backend's :meth:`~ScheduleStore.fire_slot`, which in one atomic step records
the slot as the entry's last fired one and adds the job — or does nothing when that slot (or
a later one) was already fired. The job's id is fixed by the entry and the slot,
``beat.<entry>.<slot>`` (``beat.daily-digest.20261202T070000Z``; dots, not colons, so the id
is also a valid progress-group name). A second scheduler, a restart or a crash in between
therefore cannot enqueue a slot twice. The last fired slot lives in the backend, so after
downtime the scheduler knows what it missed: ``catch_up`` decides what fires then (see
:class:`~headrace.tasks.schedules.CatchUp`). An entry that never fired starts with the
scheduler: slots before that are not fired.

A backend that can run schedules provides the two methods of :class:`ScheduleStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.tasks.signals import task_enqueued
from django.utils.crypto import get_random_string
from django.utils.module_loading import import_string

from headrace.backoff import Backoff
from headrace.exceptions import ConfigurationError
from headrace.process import call_on_loop
from headrace.tasks.backends.base import HeadraceTaskBackend, headrace_backend
from headrace.tasks.base import check_arguments
from headrace.tasks.jobs import Job, job_options
from headrace.tasks.schedules import (
    DEFAULT_GRACE,
    CatchUp,
    InvalidSchedule,
    Schedule,
    due_slots,
    next_slots,
    parse_schedule,
    slot_label,
)
from headrace.worker import WorkerState

__all__ = [
    "Beat",
    "BeatStatistics",
    "EntryReport",
    "ScheduleEntry",
    "ScheduleStore",
    "beat_for_command",
    "check_schedule",
    "format_report",
    "load_schedule",
    "run_embedded_beats",
    "schedule_report",
    "schedule_time_zone",
]

logger = logging.getLogger("headrace.tasks.beat")

SETTING: Final = "HEADRACE_TASKS_SCHEDULE"
CELERY_SETTING: Final = "CELERY_BEAT_SCHEDULE"
CATCH_UP_SETTING: Final = "HEADRACE_TASKS_SCHEDULE_CATCH_UP"
ENTRY_KEYS: Final = ("task", "schedule", "args", "kwargs", "options", "catch_up")
OPTION_KEYS: Final = ("queue", "priority", "expires")
#: The longest a scheduler sleeps before looking at the clock again (a clock that jumps, a
#: machine that slept).
MAX_SLEEP: Final = 60.0
_ID_RE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,39}")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


@runtime_checkable
class ScheduleStore(Protocol):
    """What a task backend provides to run schedules (the in-memory backend does; each
    durable backend implements the same two methods atomically in its store)."""

    def fire_slot(self, job: Job, *, entry: str, slot: float, task: Any = None) -> tuple[Job, bool]:
        """In one atomic step: if ``slot`` is later than the last slot fired for ``entry``,
        record it as the last fired and add ``job`` (as ``put_job`` does); otherwise change
        nothing. Returns the stored job and whether this call added it."""
        ...

    def last_fired_slot(self, entry: str) -> float | None:
        """The last slot fired for ``entry`` (seconds since the epoch), or None."""
        ...


# -- entries --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleEntry:
    """One checked entry of the schedule settings."""

    name: str
    id: str  #: the name as it appears in job ids and in the store (safe characters only)
    setting: str  #: the setting it came from
    task: Any  #: the headrace Task object
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any]
    expires: float | None = None  #: seconds after firing the job expires if not started
    catch_up: CatchUp = CatchUp.LATEST

    @property
    def backend(self) -> str:
        """The ``TASKS`` alias its jobs go to (and where its last fired slot is kept)."""
        alias: str = self.task.backend
        return alias

    def job_id(self, slot: float) -> str:
        return f"beat.{self.id}.{slot_label(slot)}"


def _entry_id(name: str) -> str:
    """``name`` if it is short and made of job-id characters; else a readable part of it
    and a hash of the whole, so that two names never share an id."""
    if _ID_RE.fullmatch(name):
        return name
    readable = _UNSAFE.sub("-", name).strip("-.")[:30] or "entry"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _configured() -> list[tuple[str, str, Any]]:
    """(setting, name, raw entry) from both settings; CELERY_BEAT_SCHEDULE second."""
    found = []
    for setting in (SETTING, CELERY_SETTING):
        value = getattr(settings, setting, None)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            found.append((setting, "", value))
            continue
        found.extend((setting, name, raw) for name, raw in value.items())
    return found


def _resolve_task(value: object) -> Any:
    from django.tasks import Task as DjangoTask

    task = value
    if isinstance(value, str):
        try:
            task = import_string(value)
        except ImportError as error:
            raise ValueError(f"task {value!r} cannot be imported: {error}") from error
    inner = getattr(task, "task", None)  # headrace.tasks.compat.shared_task's wrapper
    if not isinstance(task, DjangoTask) and isinstance(inner, DjangoTask):
        task = inner
    if not isinstance(task, DjangoTask):
        raise ValueError(
            f"task {value!r} is a {type(task).__name__}, not a task (decorate the function "
            "with @task or @shared_task)"
        )
    return task


def _entry(setting: str, name: object, raw: object, default: CatchUp) -> ScheduleEntry:
    """One entry, or ValueError (its text says what is wrong; the caller names the entry)."""
    if not isinstance(name, str) or not name:
        raise ValueError("the name must be a non-empty string")
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected a dict with 'task' and 'schedule', got {raw!r}")
    unknown = [key for key in raw if key not in ENTRY_KEYS]
    if unknown:
        raise ValueError(
            f"unknown key {', '.join(map(repr, unknown))} (accepted: {', '.join(ENTRY_KEYS)})"
        )
    for required in ("task", "schedule"):
        if required not in raw:
            raise ValueError(f"'{required}' is missing")
    task = _resolve_task(raw["task"])
    try:
        schedule = parse_schedule(raw["schedule"])
        problem = getattr(schedule, "problem", None)
        if problem is not None:
            raise InvalidSchedule(problem)
    except InvalidSchedule as error:
        raise ValueError(f"schedule: {error}") from None
    args, kwargs = raw.get("args", ()), raw.get("kwargs", {})
    if not isinstance(args, list | tuple):
        raise ValueError(f"args must be a list, got {args!r}")
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"kwargs must be a dict, got {kwargs!r}")
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        raise ValueError(f"options must be a dict, got {options!r}")
    bad = [key for key in options if key not in OPTION_KEYS]
    if bad:
        raise ValueError(
            f"unknown option {', '.join(map(repr, bad))} (accepted: {', '.join(OPTION_KEYS)})"
        )
    changes = {
        field: options[key]
        for key, field in (("queue", "queue_name"), ("priority", "priority"))
        if key in options
    }
    if changes:
        task = task.using(**changes)  # the backend checks the queue and the priority
    expires = options.get("expires")
    if isinstance(expires, timedelta):
        expires = expires.total_seconds()
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, int | float) or expires <= 0
    ):
        raise ValueError(f"options['expires'] must be positive seconds, got {expires!r}")
    try:
        check_arguments(task, list(args), dict(kwargs))
    except TypeError as error:
        raise ValueError(str(error)) from None
    catch_up = CatchUp.parse(raw["catch_up"]) if "catch_up" in raw else default
    backend = task.get_backend()
    if not isinstance(backend, ScheduleStore):
        raise ValueError(
            f"TASKS[{task.backend!r}] ({type(backend).__qualname__}) cannot run schedules: "
            "use a headrace task backend"
        )
    return ScheduleEntry(
        name=name,
        id=_entry_id(name),
        setting=setting,
        task=task,
        schedule=schedule,
        args=tuple(args),
        kwargs=dict(kwargs),
        expires=None if expires is None else float(expires),
        catch_up=catch_up,
    )


def load_schedule() -> tuple[list[ScheduleEntry], list[str]]:
    """Every entry of the schedule settings that is right, and a line per mistake (each
    naming its setting and entry)."""
    problems: list[str] = []
    default = CatchUp.LATEST
    raw_default = getattr(settings, CATCH_UP_SETTING, CatchUp.LATEST.value)
    try:
        default = CatchUp.parse(raw_default)
    except InvalidSchedule as error:
        problems.append(f"{CATCH_UP_SETTING}: {error}")
    entries: list[ScheduleEntry] = []
    seen: dict[str, str] = {}
    ids: dict[str, str] = {}
    for setting, name, raw in _configured():
        where = f"{setting}[{name!r}]"
        if name == "" and not isinstance(raw, Mapping):
            problems.append(f"{setting} must be a dict of entries, got {raw!r}")
            continue
        if name in seen:
            problems.append(f"{where}: the entry is also in {seen[name]}; keep one")
            continue
        seen[name] = setting
        try:
            entry = _entry(setting, name, raw, default)
        except Exception as error:  # anything a bad value may raise: report, never crash
            problems.append(f"{where}: {error}")
            continue
        if entry.id in ids:
            problems.append(f"{where}: its id {entry.id!r} is also {ids[entry.id]}'s")
            continue
        ids[entry.id] = where
        entries.append(entry)
    return entries, problems


@register()
def check_schedule(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Each schedule entry names an importable task, a valid schedule and valid options."""
    _, problems = load_schedule()
    return [Error(problem, id="headrace.E110") for problem in problems]


def schedule_time_zone() -> tzinfo:
    """The zone schedules are read in: Django's ``TIME_ZONE`` (UTC when it is None)."""
    name = getattr(settings, "TIME_ZONE", None)
    return UTC if not name else ZoneInfo(name)


# -- the scheduler ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BeatStatistics:
    """Counters since the scheduler started."""

    entries: int
    passes: int  #: times it looked at the clock for due slots
    fired: int  #: slots this scheduler fired
    skipped: int  #: slots another scheduler (or an earlier run) had fired already
    failed: int  #: attempts to fire an entry that raised (retried with backoff)
    outages: int  #: times firing started failing (see headrace.backoff)


class Beat:
    """Fire the schedule entries whose tasks use ``backend`` (default: every such entry of
    the settings), each slot once whatever number of Beats run (see the module docstring).

    ``clock`` (default: the backend's) is read for the time and arms the timers; ``tz``
    (default: ``TIME_ZONE``) is the zone crontabs are read in.
    """

    def __init__(
        self,
        backend: str | HeadraceTaskBackend = "default",
        entries: Iterable[ScheduleEntry] | None = None,
        *,
        clock: Any = None,
        tz: tzinfo | None = None,
        grace: float = DEFAULT_GRACE,
        max_sleep: float = MAX_SLEEP,
    ) -> None:
        self.backend = headrace_backend(backend, needs="the scheduler runs on")
        if not isinstance(self.backend, ScheduleStore):
            raise ConfigurationError(
                f"TASKS[{self.backend.alias!r}] ({type(self.backend).__qualname__}) cannot "
                "run schedules (it has no fire_slot/last_fired_slot)"
            )
        if self.backend.eager:
            raise ConfigurationError(
                f"TASKS[{self.backend.alias!r}] is eager (jobs run inside enqueue): nothing "
                "would run the fired jobs"
            )
        if entries is None:
            loaded, problems = load_schedule()
            if problems:
                raise ConfigurationError("; ".join(problems), problems=problems)
            entries = [e for e in loaded if e.backend == self.backend.alias]
        self.entries: tuple[ScheduleEntry, ...] = tuple(entries)
        wrong = [e.name for e in self.entries if e.backend != self.backend.alias]
        if wrong:
            raise ConfigurationError(
                f"entries {', '.join(map(repr, wrong))} do not use TASKS[{self.backend.alias!r}]"
            )
        self._store: ScheduleStore = self.backend
        self.clock = clock if clock is not None else self.backend.clock
        self.tz = tz if tz is not None else schedule_time_zone()
        self.grace = float(grace)
        self.max_sleep = float(max_sleep)
        self.beat_id = get_random_string(16)
        self.state = WorkerState.NEW
        self.started_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._changed = asyncio.Event()
        self._wake_at: float | None = None  #: when the sleeping loop wakes next
        self._waiting = False
        self._error: Exception | None = None  #: the first failure of the last pass
        self._failing_entries: set[str] = set()
        self._stop_requested = False
        self._started = threading.Event()
        self._counts = dict.fromkeys(("passes", "fired", "skipped", "failed"), 0)
        self._backoff = Backoff(f"scheduler {self.beat_id}", logger=logger, clock=self.clock)

    @property
    def layer_alias(self) -> str:
        """The channel layer the backend talks to (``runworker`` closes it at the end)."""
        return self.backend.channel_layer_alias

    def statistics(self) -> BeatStatistics:
        return BeatStatistics(
            entries=len(self.entries), **self._counts, outages=self._backoff.outages
        )

    # -- one pass (no loop: tests call it with the time they choose) -----------------------------

    def fire_due(self, now: float | None = None) -> list[str]:
        """Fire every slot due at ``now`` (default: the clock's time); the ids of the jobs
        this call added. An entry that fails is logged and counted; the others still fire."""
        if now is None:
            now = self.clock.time()
        if self.started_at is None:
            self.started_at = now
        self._counts["passes"] += 1
        fired: list[str] = []
        self._error = None
        for entry in self.entries:
            try:
                fired.extend(self._fire_entry(entry, now))
            except Exception as error:
                self._error = self._error or error
                self._counts["failed"] += 1
                first = entry.name not in self._failing_entries
                self._failing_entries.add(entry.name)
                logger.log(
                    logging.ERROR if first else logging.DEBUG,
                    "firing schedule entry %r failed; retrying with backoff",
                    entry.name,
                    exc_info=first,
                )
            else:
                self._failing_entries.discard(entry.name)
        return fired

    def _fire_entry(self, entry: ScheduleEntry, now: float) -> list[str]:
        last = self._store.last_fired_slot(entry.id)
        after = last if last is not None else self.started_at
        assert after is not None
        fired = []
        for slot in due_slots(
            entry.schedule, self.tz, after=after, now=now, catch_up=entry.catch_up, grace=self.grace
        ):
            job = self._job(entry, slot, now)
            stored, added = self._store.fire_slot(job, entry=entry.id, slot=slot, task=entry.task)
            if not added:
                self._counts["skipped"] += 1
                continue
            self._counts["fired"] += 1
            fired.append(job.id)
            logger.info(
                "schedule %r fired slot %s as job %s",
                entry.name,
                datetime.fromtimestamp(slot, self.tz).isoformat(),
                job.id,
            )
            task_enqueued.send(
                type(self.backend), task_result=self.backend.to_result(stored, entry.task)
            )
        return fired

    def _job(self, entry: ScheduleEntry, slot: float, now: float) -> Job:
        task = entry.task
        args, kwargs = check_arguments(task, list(entry.args), dict(entry.kwargs))
        return Job(
            id=entry.job_id(slot),
            task_path=task.module_path,
            args=args,
            kwargs=kwargs,
            queue=task.queue_name,
            priority=task.priority,
            backend=self.backend.alias,
            enqueued_at=now,
            due_at=now,
            expires_at=None if entry.expires is None else now + entry.expires,
            key=getattr(task, "key", None),
            owner=None,
            options=job_options(task),
        )

    def next_wake(self, now: float) -> float | None:
        """When the next slot of any entry is due (None: no entry has one)."""
        slots = [entry.schedule.next_after(now, self.tz) for entry in self.entries]
        found = [slot for slot in slots if slot is not None]
        return min(found) if found else None

    # -- the loop ------------------------------------------------------------------------------

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block (any thread) until the scheduler has made its first pass."""
        return self._started.wait(timeout)

    async def wait_idle(self) -> None:
        """Wait until the scheduler has fired what is due at the clock's current time and
        sleeps until a later time (tests move a ManualClock, then wait on this)."""
        while True:
            self._changed.clear()
            if self.state is WorkerState.STOPPED or (
                self._waiting and self._wake_at is not None and self._wake_at > self.clock.time()
            ):
                return
            await self._changed.wait()

    def stop(self, *, now: bool = False) -> None:
        """Stop after the pass in hand (``now`` changes nothing: a pass never blocks).
        Safe from any thread, and more than once."""
        loop = self._loop
        if loop is None:
            self._stop_requested = True
            return
        call_on_loop(loop, self._stop)

    def _stop(self) -> None:
        if self.state in (WorkerState.NEW, WorkerState.RUNNING):
            self.state = WorkerState.STOPPING
        if self._wake is not None:
            self._wake.set()

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Fire slots as they come until :meth:`stop`."""
        if self.state is not WorkerState.NEW:
            raise RuntimeError(f"a scheduler runs once: expected state NEW, got {self.state.name}")
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.state = WorkerState.RUNNING
        if self._stop_requested:
            self._stop()
        logger.info(
            "scheduler %s firing %d schedule entr%s on TASKS[%r] (time zone %s)",
            self.beat_id,
            len(self.entries),
            "y" if len(self.entries) == 1 else "ies",
            self.backend.alias,
            self.tz,
        )
        try:
            while self.state is WorkerState.RUNNING:
                now = self.clock.time()
                self.fire_due(now)
                if self._error is not None:
                    await self._pause(self._error)
                    continue
                self._backoff.succeeded()
                wake_at = self.next_wake(now)
                limit = now + self.max_sleep
                wake_at = limit if wake_at is None else min(wake_at, limit)
                self._wake_at = wake_at
                self._waiting = True
                self._started.set()
                self._changed.set()
                timer = self.clock.call_at(wake_at, self._wake_up)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
                    self._wake.clear()
                    self._waiting = False
        finally:
            self.state = WorkerState.STOPPED
            self._started.set()
            self._changed.set()
            logger.info("scheduler %s stopped (%s)", self.beat_id, self.statistics())

    async def _pause(self, error: Exception) -> None:
        """Sleep the backoff pause after a failed pass (a stop cuts it short); the slots
        still due are fired by the next pass."""
        assert self._wake is not None
        self._started.set()
        paused = asyncio.ensure_future(self._backoff.failed(error))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({paused, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (paused, woken):
                waiting.cancel()
            await asyncio.wait({paused, woken})
            self._wake.clear()


# -- runserver ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _running(beats: Sequence[Beat]) -> AsyncIterator[None]:
    runs = [asyncio.ensure_future(beat.run()) for beat in beats]
    try:
        yield
    finally:
        for beat in beats:
            beat.stop()
        await asyncio.wait(runs)


async def run_embedded_beats() -> None:
    """Run the schedule of each in-memory backend until cancelled (``runserver`` runs it
    beside its embedded task workers); returns at once when there is nothing to run."""
    from headrace.tasks.worker import embedded_task_backends

    backends = embedded_task_backends()
    if not backends:
        return
    entries, problems = load_schedule()
    for problem in problems:  # the system check reported them already, unless skipped
        logger.error("schedule entry left out: %s", problem)
    beats = []
    for backend in backends:
        mine = [entry for entry in entries if entry.backend == backend.alias]
        if mine:
            beats.append(Beat(backend, mine))
            logger.info(
                "running the schedule of TASKS[%r] in this process (in-memory backend): %s",
                backend.alias,
                ", ".join(entry.name for entry in mine),
            )
    if not beats:
        return
    async with _running(beats):
        await asyncio.Event().wait()


def beat_for_command(**options: Any) -> Beat:
    """The :class:`Beat` ``runbeat`` and ``runworker --beat`` run (their options by name)."""
    return Beat(options.get("task_backend", "default"))


# -- manage.py tasks schedule ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryReport:
    """What ``manage.py tasks schedule`` shows for one entry."""

    name: str
    task: str
    schedule: str
    backend: str
    catch_up: CatchUp
    next: tuple[datetime, ...]  #: the next fire times, in the schedule's time zone
    last_fired: datetime | None


def schedule_report(
    entries: Iterable[ScheduleEntry] | None = None,
    *,
    now: float | None = None,
    count: int = 5,
    tz: tzinfo | None = None,
) -> list[EntryReport]:
    """Each entry with its next ``count`` fire times and its last fired slot (read from its
    backend)."""
    if entries is None:
        entries, problems = load_schedule()
        if problems:
            raise ConfigurationError("; ".join(problems), problems=problems)
    tz = tz if tz is not None else schedule_time_zone()
    reports = []
    for entry in entries:
        backend: Any = entry.task.get_backend()
        at = backend.clock.time() if now is None else now
        last = backend.last_fired_slot(entry.id)
        reports.append(
            EntryReport(
                name=entry.name,
                task=entry.task.module_path,
                schedule=entry.schedule.describe(),
                backend=entry.backend,
                catch_up=entry.catch_up,
                next=tuple(
                    datetime.fromtimestamp(slot, tz)
                    for slot in next_slots(entry.schedule, tz, after=at, count=count)
                ),
                last_fired=None if last is None else datetime.fromtimestamp(last, tz),
            )
        )
    return reports


def format_report(reports: Sequence[EntryReport]) -> str:
    """The text ``manage.py tasks schedule`` prints."""
    if not reports:
        return f"No schedule entries ({SETTING} and {CELERY_SETTING} are empty).\n"
    lines = []
    for report in reports:
        lines.append(f"{report.name}")
        lines.append(f"  task:       {report.task} (TASKS[{report.backend!r}])")
        lines.append(f"  schedule:   {report.schedule}, catch_up={report.catch_up.value!r}")
        last = "never" if report.last_fired is None else report.last_fired.isoformat()
        lines.append(f"  last fired: {last}")
        lines.append("  next:       " + ("none" if not report.next else report.next[0].isoformat()))
        lines.extend(f"              {when.isoformat()}" for when in report.next[1:])
    return "\n".join(lines) + "\n"
