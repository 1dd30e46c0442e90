"""The scheduler (headrace.tasks.beat) on the in-memory backend, on a manual clock.

Several schedulers share one backend here as they share one Redis or database in production:
each slot must be enqueued exactly once whatever they do (start late, stop, restart), and the
last fired slot must survive a scheduler. Tests move the clock and wait on
``Beat.wait_idle()``, never on sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.tasks import task_backends
from django.tasks.signals import task_enqueued

from headrace.exceptions import ConfigurationError
from headrace.layers import ManualClock
from headrace.management.commands.runserver import Command as Runserver
from headrace.tasks import JobState
from headrace.tasks.backends.memory import MemoryTaskBackend
from headrace.tasks.beat import (
    Beat,
    ScheduleEntry,
    beat_for_command,
    format_report,
    load_schedule,
    run_embedded_beats,
    schedule_report,
)
from headrace.tasks.compat import crontab
from headrace.tasks.schedules import CatchUp
from headrace.tasks.worker import TaskWorker, run_embedded_task_workers
from tests.blogapp.models import Post
from tests.task_backends import memory
from tests.taskapp import periodic

WAIT = 5
START = datetime(2026, 5, 1, 6, 59, 30, tzinfo=UTC).timestamp()


def at(*fields: int) -> float:
    return datetime(*fields, tzinfo=UTC).timestamp()  # type: ignore[misc]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=START)


@pytest.fixture
def backend(settings: Any, clock: ManualClock) -> MemoryTaskBackend:
    settings.TASKS = memory(clock)
    settings.TIME_ZONE = "UTC"
    settings.HEADRACE_TASKS_SCHEDULE = {}
    periodic.FIRED.clear()
    periodic.PINGED = asyncio.Event()  # bound to this test's loop on first use
    found = task_backends["default"]
    assert isinstance(found, MemoryTaskBackend)
    return found


def schedule(settings: Any, **entries: dict[str, Any]) -> list[ScheduleEntry]:
    settings.HEADRACE_TASKS_SCHEDULE = entries
    loaded, problems = load_schedule()
    assert problems == []
    return loaded


@pytest.fixture
def enqueued() -> Iterator[list[str]]:
    """The ids of every job enqueued (task_enqueued), in order."""
    ids: list[str] = []

    def record(sender: Any, task_result: Any, **kwargs: Any) -> None:
        ids.append(task_result.id)

    task_enqueued.connect(record)
    yield ids
    task_enqueued.disconnect(record)


StartBeat = Callable[..., Awaitable[Beat]]


@pytest.fixture
async def start_beat(backend: MemoryTaskBackend) -> AsyncIterator[StartBeat]:
    """Start a Beat's loop on this test's loop; stopped at the end."""
    running: list[tuple[Beat, asyncio.Future[None]]] = []

    async def start(*args: Any, **options: Any) -> Beat:
        beat = Beat(backend, *args, **options)
        running.append((beat, asyncio.ensure_future(beat.run())))
        await asyncio.wait_for(beat.wait_idle(), WAIT)
        return beat

    yield start
    for beat, run in running:
        beat.stop()
        await asyncio.wait_for(run, WAIT)


async def advance(clock: ManualClock, seconds: float, *beats: Beat) -> None:
    clock.advance(seconds)
    for beat in beats:
        await asyncio.wait_for(beat.wait_idle(), WAIT)


# -- exactly once ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_three_schedulers_over_a_simulated_year_fire_each_slot_once(
    backend: MemoryTaskBackend, settings: Any, enqueued: list[str]
) -> None:
    entries = schedule(
        settings,
        daily={"task": "tests.taskapp.periodic.tick", "schedule": crontab(hour=7, minute=0)},
        six_hourly={"task": "tests.taskapp.periodic.tick", "schedule": "0 */6 * * *"},
    )
    tz = UTC
    beats = [Beat(backend, entries, tz=tz) for _ in range(3)]
    chance = random.Random(16)
    start = at(2026, 1, 1) - 1
    for beat in beats:
        beat.started_at = start
    now, end = start, at(2027, 1, 1) - 1
    while (wake := min(b.next_wake(now) or end for b in beats)) <= end:
        now = wake + chance.choice((0, 0, 0.5, 30))  # on time, or a little late
        # The schedulers look at the time in any order; some are paused this round, but
        # not all (a slot nobody saw in time is a missed slot: see the catch-up tests).
        order = chance.sample(beats, 3)
        for beat in [order[0]] + [b for b in order[1:] if chance.random() < 0.6]:
            beat.fire_due(now)
    assert len(enqueued) == len(set(enqueued)) == 365 + 4 * 365
    assert sum(b.statistics().fired for b in beats) == 365 + 4 * 365
    assert sum(b.statistics().skipped for b in beats) == 0  # a fired slot is never due again
    assert "beat.daily.20260101T070000Z" in enqueued
    assert "beat.six_hourly.20261231T180000Z" in enqueued
    assert backend.last_fired_slot("daily") == at(2026, 12, 31, 7)


async def test_three_running_schedulers_with_the_leader_killed_twice_fire_each_slot_once(
    backend: MemoryTaskBackend,
    settings: Any,
    clock: ManualClock,
    start_beat: StartBeat,
    enqueued: list[str],
) -> None:
    """The in-process version of the issue's three-process test: a 1-second interval for 20
    seconds; the scheduler that fired the last slot is stopped (twice) and replaced."""
    entries = schedule(
        settings, second={"task": "tests.taskapp.periodic.tick", "schedule": timedelta(seconds=1)}
    )
    worker = TaskWorker(backend)
    working = asyncio.ensure_future(worker.run())
    beats = [await start_beat(entries) for _ in range(3)]
    killed = 0
    for second in range(1, 21):
        await advance(clock, 1, *beats)
        if second in (7, 14):
            leader = max(beats, key=lambda b: b.statistics().fired)
            leader.stop()
            beats.remove(leader)
            beats.append(await start_beat(entries))
            killed += 1
    await asyncio.wait_for(worker.wait_idle(), WAIT)
    worker.stop()
    await working
    assert killed == 2
    assert sorted(enqueued) == sorted(
        f"beat.second.{datetime.fromtimestamp(int(START) + s, UTC):%Y%m%dT%H%M%S}Z"
        for s in range(1, 21)
    )
    assert len(periodic.FIRED) == 20  # and each ran once


async def test_a_slot_fired_by_another_scheduler_is_skipped_not_enqueued_again(
    backend: MemoryTaskBackend, settings: Any, clock: ManualClock, enqueued: list[str]
) -> None:
    entries = schedule(
        settings, minutely={"task": "tests.taskapp.periodic.tick", "schedule": "* * * * *"}
    )
    first, second = Beat(backend, entries), Beat(backend, entries)
    first.fire_due(), second.fire_due()
    clock.advance(30)  # 07:00:00
    assert first.fire_due() == ["beat.minutely.20260501T070000Z"]
    # The second scheduler was paused before the slot and looks now.
    assert second.fire_due() == []
    assert enqueued == ["beat.minutely.20260501T070000Z"]
    result = periodic.tick.get_result("beat.minutely.20260501T070000Z")
    assert result.state is JobState.READY
    assert result.args == []


def test_the_fire_itself_is_atomic_between_threads(
    backend: MemoryTaskBackend, settings: Any, clock: ManualClock, enqueued: list[str]
) -> None:
    entries = schedule(
        settings, minutely={"task": "tests.taskapp.periodic.tick", "schedule": "* * * * *"}
    )
    beats = [Beat(backend, entries) for _ in range(8)]
    for beat in beats:
        beat.fire_due()
    clock.advance(30)
    barrier = threading.Barrier(len(beats))
    fired: list[list[str]] = []

    def race(beat: Beat) -> None:
        barrier.wait(WAIT)
        fired.append(beat.fire_due())

    threads = [threading.Thread(target=race, args=(b,)) for b in beats]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert sorted(map(len, fired)) == [0] * 7 + [1]
    assert enqueued == ["beat.minutely.20260501T070000Z"]


# -- downtime and restarts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("catch_up", "fired"),
    [
        ("latest", ["20260501T170000Z"]),
        ("all", [f"20260501T{h}0000Z" for h in range(10, 18)]),
        ("none", []),
    ],
)
async def test_after_downtime_catch_up_decides_which_missed_slots_fire(
    backend: MemoryTaskBackend,
    settings: Any,
    clock: ManualClock,
    start_beat: StartBeat,
    enqueued: list[str],
    catch_up: str,
    fired: list[str],
) -> None:
    settings.HEADRACE_TASKS_SCHEDULE_CATCH_UP = catch_up
    entries = schedule(
        settings, hourly={"task": "tests.taskapp.periodic.tick", "schedule": crontab(minute=0)}
    )
    beat = await start_beat(entries)
    for hour in (7, 8, 9):
        await advance(clock, at(2026, 5, 1, hour) - clock.time(), beat)
    assert len(enqueued) == 3
    beat.stop()
    clock.advance(8 * 3600 + 600)  # down from 09:00 to 17:10: 10:00 ... 17:00 missed
    enqueued.clear()
    restarted = await start_beat(entries)
    assert enqueued == [f"beat.hourly.{label}" for label in fired]
    # And from there on, every slot fires on time.
    await advance(clock, 50 * 60, restarted)
    assert enqueued[-1] == "beat.hourly.20260501T180000Z"


async def test_catch_up_can_be_set_per_entry(
    backend: MemoryTaskBackend,
    settings: Any,
    clock: ManualClock,
    start_beat: StartBeat,
    enqueued: list[str],
) -> None:
    entries = schedule(
        settings,
        every={
            "task": "tests.taskapp.periodic.tick",
            "schedule": crontab(minute=0),
            "catch_up": "all",
        },
        latest={"task": "tests.taskapp.periodic.tick", "schedule": crontab(minute=0)},
    )
    assert [e.catch_up for e in entries] == [CatchUp.ALL, CatchUp.LATEST]
    beat = await start_beat(entries)
    await advance(clock, 30, beat)  # 07:00
    beat.stop()
    clock.advance(3 * 3600)  # 08:00, 09:00, 10:00 missed
    enqueued.clear()
    await start_beat(entries)
    assert sorted(enqueued) == [
        "beat.every.20260501T080000Z",
        "beat.every.20260501T090000Z",
        "beat.every.20260501T100000Z",
        "beat.latest.20260501T100000Z",
    ]


async def test_an_entry_that_never_fired_starts_with_the_scheduler(
    backend: MemoryTaskBackend,
    settings: Any,
    clock: ManualClock,
    start_beat: StartBeat,
    enqueued: list[str],
) -> None:
    entries = schedule(
        settings, hourly={"task": "tests.taskapp.periodic.tick", "schedule": "30 * * * *"}
    )
    beat = await start_beat(entries)  # 06:59:30: 06:30 is before it started
    assert enqueued == []
    assert backend.last_fired_slot("hourly") is None
    await advance(clock, 30 * 60 + 30, beat)
    assert enqueued == ["beat.hourly.20260501T073000Z"]
    assert backend.last_fired_slot("hourly") == at(2026, 5, 1, 7, 30)


async def test_a_scheduler_sleeps_until_the_next_slot_and_no_longer_than_max_sleep(
    backend: MemoryTaskBackend, settings: Any, clock: ManualClock, start_beat: StartBeat
) -> None:
    entries = schedule(
        settings, daily={"task": "tests.taskapp.periodic.tick", "schedule": "0 7 * * *"}
    )
    beat = await start_beat(entries, max_sleep=60)
    assert beat.next_wake(clock.time()) == at(2026, 5, 1, 7)
    assert beat.statistics().passes == 1
    await advance(clock, 25, beat)  # no slot and no max_sleep reached: still asleep
    assert beat.statistics().passes == 1
    await advance(clock, 5, beat)
    assert (beat.statistics().passes, beat.statistics().fired) == (2, 1)
    await advance(clock, 60, beat)  # woke up to look at the clock: nothing due
    assert (beat.statistics().passes, beat.statistics().fired) == (3, 1)


async def test_a_failing_store_is_logged_counted_and_retried_while_the_others_fire(
    backend: MemoryTaskBackend,
    settings: Any,
    clock: ManualClock,
    start_beat: StartBeat,
    enqueued: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entries = schedule(
        settings,
        fragile={"task": "tests.taskapp.periodic.tick", "schedule": "0 7 * * *"},
        sturdy={"task": "tests.taskapp.periodic.tick", "schedule": "0 7 * * *"},
    )
    real = backend.fire_slot
    failures = [ConnectionError("store is down")] * 2

    def flaky(job: Any, *, entry: str, slot: float, task: Any = None) -> Any:
        if entry == "fragile" and failures:
            raise failures.pop()
        return real(job, entry=entry, slot=slot, task=task)

    monkeypatch.setattr(backend, "fire_slot", flaky)
    beat = await start_beat(entries)
    with caplog.at_level(logging.WARNING, "headrace.tasks.beat"):
        clock.advance(30)  # 07:00: fragile fails, sturdy fires; the scheduler backs off
        await asyncio.wait_for(clock.wait_armed(), WAIT)
    assert enqueued == ["beat.sturdy.20260501T070000Z"]
    assert "firing schedule entry 'fragile' failed; retrying with backoff" in caplog.text
    assert "ConnectionError: store is down" in caplog.text  # with its traceback
    assert f"scheduler {beat.beat_id} failed (ConnectionError: store is down)" in caplog.text
    clock.advance(2)  # the backoff pause (at most 2 s): fails again
    await asyncio.wait_for(clock.wait_armed(), WAIT)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "headrace.tasks.beat"):
        await advance(clock, 2, beat)  # fires (catch_up latest: the 07:00 slot)
    assert enqueued[-1] == "beat.fragile.20260501T070000Z"
    assert f"scheduler {beat.beat_id} works again after 2 failures" in caplog.text
    stats = beat.statistics()
    assert (stats.failed, stats.outages, stats.fired) == (2, 1, 2)


# -- what a fired job carries ---------------------------------------------------------------------


async def test_fired_jobs_carry_args_kwargs_and_options_and_run_on_a_worker(
    backend: MemoryTaskBackend,
    settings: Any,
    clock: ManualClock,
    start_beat: StartBeat,
    enqueued: list[str],
) -> None:
    entries = schedule(
        settings,
        weekly={
            "task": "tests.taskapp.periodic.report",
            "schedule": crontab(minute=0, hour=7, day_of_week="fri"),  # 2026-05-01 is a Friday
            "args": ["weekly"],
            "kwargs": {"to": "ops@example.com"},
            "options": {"priority": 10, "expires": 600},
        },
    )
    await start_beat(entries)
    worker = TaskWorker(backend, ["emails"])
    working = asyncio.ensure_future(worker.run())
    clock.advance(30)
    await asyncio.wait_for(worker.wait_idle(), WAIT)
    worker.stop()
    await working
    [job_id] = enqueued
    job = backend.get_job(job_id)
    assert job is not None
    assert (job.queue, job.priority, job.expires_at) == ("emails", 10, at(2026, 5, 1, 7, 10))
    assert job.state is JobState.SUCCESSFUL
    assert job.return_value == "weekly"
    assert periodic.FIRED == [("report", ("weekly", "ops@example.com"))]


async def test_an_async_task_fired_by_the_schedule_runs_on_the_worker(
    backend: MemoryTaskBackend, settings: Any, clock: ManualClock, start_beat: StartBeat
) -> None:
    entries = schedule(
        settings,
        pinger={"task": periodic.ping, "schedule": 60},  # the task object itself
    )
    await start_beat(entries)
    worker = TaskWorker(backend)
    working = asyncio.ensure_future(worker.run())
    clock.advance(30)
    await asyncio.wait_for(periodic.PINGED.wait(), WAIT)
    worker.stop()
    await working
    assert periodic.FIRED == [("ping", None)]


@pytest.mark.django_db(transaction=True)
async def test_the_seeds_celery_beat_schedule_runs_with_only_its_import_changed(
    backend: MemoryTaskBackend, settings: Any, clock: ManualClock, start_beat: StartBeat
) -> None:
    # settings.py of the seed, with `from celery.schedules import crontab` replaced by
    # `from headrace.tasks.compat import crontab`, and the app's module path.
    settings.CELERY_BEAT_SCHEDULE = {
        "daily-digest": {
            "task": "tests.blogapp.tasks.send_daily_digest",
            "schedule": crontab(hour=7, minute=0),
        },
    }
    settings.TIME_ZONE = "Europe/Paris"  # 07:00 in Paris is 05:00 UTC in May
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    author = await User.objects.acreate(username="ada", email="ada@example.com")
    await Post.objects.acreate(title="Engines", slug="engines", author=author)
    mail.outbox = []
    clock.advance(at(2026, 5, 2, 4, 59, 30) - clock.time())
    beat = await start_beat()
    assert [e.name for e in beat.entries] == ["daily-digest"]
    worker = TaskWorker(backend)
    working = asyncio.ensure_future(worker.run())
    await advance(clock, 30, beat)
    await asyncio.wait_for(worker.wait_idle(), WAIT)
    worker.stop()
    await working
    result = backend.get_result("beat.daily-digest.20260502T050000Z")
    assert result.return_value == 1
    assert [m.subject for m in mail.outbox] == ["Daily digest"]
    assert mail.outbox[0].body == "Engines"


# -- where it runs --------------------------------------------------------------------------------


def test_runserver_runs_the_schedule_beside_the_server() -> None:
    assert run_embedded_beats in Runserver().get_background_tasks()


async def test_runserver_embeds_the_schedule_and_its_jobs_run_in_the_same_process(
    backend: MemoryTaskBackend,
    settings: Any,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    schedule(settings, pinger={"task": "tests.taskapp.periodic.ping", "schedule": 60})
    with caplog.at_level(logging.INFO, "headrace.tasks"):
        beats = asyncio.ensure_future(run_embedded_beats())
        workers = asyncio.ensure_future(run_embedded_task_workers())
        await asyncio.wait_for(clock.wait_armed(), WAIT)  # its first pass is done
        clock.advance(30)
        await asyncio.wait_for(periodic.PINGED.wait(), WAIT)
    assert "running the schedule of TASKS['default'] in this process" in caplog.text
    for running in (beats, workers):
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert backend.last_fired_slot("pinger") == at(2026, 5, 1, 7)


async def test_runserver_has_no_schedule_to_run_without_entries_or_in_memory_backends(
    backend: MemoryTaskBackend, settings: Any
) -> None:
    await asyncio.wait_for(run_embedded_beats(), WAIT)  # no entries: returns at once
    schedule(settings, pinger={"task": "tests.taskapp.periodic.ping", "schedule": 60})
    settings.HEADRACE_EMBEDDED_WORKERS = False
    await asyncio.wait_for(run_embedded_beats(), WAIT)


def test_the_commands_build_a_beat_for_the_task_backend(
    backend: MemoryTaskBackend, settings: Any
) -> None:
    schedule(settings, pinger={"task": "tests.taskapp.periodic.ping", "schedule": 60})
    beat = beat_for_command(task_backend="default")
    assert [e.name for e in beat.entries] == ["pinger"]
    assert beat.backend is backend
    with pytest.raises(CommandError, match="no task backend 'elsewhere'"):
        call_command("runbeat", "--task-backend", "elsewhere")


def test_a_beat_refuses_backends_that_cannot_run_schedules(settings: Any) -> None:
    settings.TASKS = memory(ManualClock(), eager=True)
    with pytest.raises(ConfigurationError, match="is eager"):
        Beat("default")
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    with pytest.raises(ConfigurationError, match="the scheduler runs on headrace backends"):
        Beat("default")


def test_a_beat_refuses_a_schedule_with_mistakes(backend: MemoryTaskBackend, settings: Any) -> None:
    settings.HEADRACE_TASKS_SCHEDULE = {
        "bad": {"task": "tests.taskapp.periodic.nope", "schedule": 60}
    }
    with pytest.raises(ConfigurationError, match=r"HEADRACE_TASKS_SCHEDULE\['bad'\]"):
        Beat(backend)


# -- manage.py tasks schedule ---------------------------------------------------------------------


def test_tasks_schedule_lists_each_entry_with_its_next_five_times_and_last_fired_slot(
    backend: MemoryTaskBackend,
    settings: Any,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings.TIME_ZONE = "Europe/Paris"
    entries = schedule(
        settings,
        **{
            "daily-digest": {
                "task": "tests.taskapp.periodic.tick",
                "schedule": crontab(hour=9, minute=0),
            },
            "every 10 minutes": {
                "task": "tests.taskapp.periodic.tick",
                "schedule": timedelta(minutes=10),
                "catch_up": "all",
            },
        },
    )
    assert entries[1].id.startswith("every-10-minutes-")  # a name made safe for job ids
    call_command("tasks", "schedule")
    out = capsys.readouterr().out
    assert "daily-digest\n" in out
    assert "task:       tests.taskapp.periodic.tick (TASKS['default'])" in out
    assert "schedule:   crontab(minute=0, hour=9," in out
    assert "last fired: never" in out
    for day in range(1, 6):
        assert f"2026-05-0{day}T09:00:00+02:00" in out
    assert "2026-05-06T09" not in out
    assert "schedule:   every 0:10:00, catch_up='all'" in out
    beat = Beat(backend, entries)
    beat.started_at = at(2026, 5, 1, 6)
    beat.fire_due(at(2026, 5, 1, 7, 30))  # 09:00 in Paris, and a 10-minute slot
    [digest, tens] = schedule_report(entries)
    assert digest.last_fired == datetime(2026, 5, 1, 9, tzinfo=UTC) - timedelta(hours=2)
    assert tens.last_fired is not None
    assert tens.last_fired.timestamp() == at(2026, 5, 1, 7, 30)
    assert len(tens.next) == 5
    assert "last fired: 2026-05-01T09:30:00+02:00" in format_report([tens])


def test_tasks_schedule_with_no_entries_and_bad_arguments(
    backend: MemoryTaskBackend, capsys: pytest.CaptureFixture[str], settings: Any
) -> None:
    call_command("tasks", "schedule", "--count", "2")
    assert "No schedule entries" in capsys.readouterr().out
    with pytest.raises(CommandError, match="name a subcommand: schedule"):
        call_command("tasks")
    with pytest.raises(CommandError, match="--count must be 1 or more"):
        call_command("tasks", "schedule", "--count", "0")
    settings.HEADRACE_TASKS_SCHEDULE = {"x": {"task": "tests.taskapp.periodic.tick"}}
    with pytest.raises(
        CommandError, match=r"HEADRACE_TASKS_SCHEDULE\['x'\]: 'schedule' is missing"
    ):
        call_command("tasks", "schedule")


# -- start-up checks ------------------------------------------------------------------------------


def _schedule_errors() -> list[str]:
    return [m.msg for m in run_checks() if m.id == "headrace.E110"]


def test_a_valid_schedule_passes_the_checks(backend: MemoryTaskBackend, settings: Any) -> None:
    schedule(settings, daily={"task": "tests.taskapp.periodic.tick", "schedule": "0 7 * * *"})
    assert _schedule_errors() == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"task": "tests.taskapp.periodic.nope", "schedule": 60},
            "task 'tests.taskapp.periodic.nope' cannot be imported",
        ),
        (
            {"task": "tests.taskapp.periodic.not_a_task", "schedule": 60},
            "is a function, not a task (decorate the function with @task or @shared_task)",
        ),
        (
            {
                "task": "tests.taskapp.periodic.tick",
                "schedule": crontab(day_of_month=31, month_of_year=2),
            },
            "schedule: no date matches: day_of_month 31 never falls in month_of_year 2",
        ),
        (
            {"task": "tests.taskapp.periodic.tick", "schedule": crontab(minute="*/0")},
            "schedule: minute: step '0' in '*/0' is not 1 or more",
        ),
        (
            {"task": "tests.taskapp.periodic.tick", "schedule": "0 25 * * *"},
            "schedule: hour: 25 is out of range 0-23",
        ),
        (
            {"task": "tests.taskapp.periodic.tick", "schedule": timedelta(0)},
            "schedule: an interval must be a whole number of seconds, at least 1",
        ),
        ({"task": "tests.taskapp.periodic.tick"}, "'schedule' is missing"),
        (
            {"task": "tests.taskapp.periodic.tick", "schedule": 60, "relative": True},
            "unknown key 'relative' (accepted: task, schedule, args, kwargs, options, catch_up)",
        ),
        (
            {"task": "tests.taskapp.periodic.tick", "schedule": 60, "catch_up": "some"},
            "catch_up must be one of 'latest', 'all', 'none', got 'some'",
        ),
        (
            {"task": "tests.taskapp.periodic.tick", "schedule": 60, "options": {"exchange": "x"}},
            "unknown option 'exchange' (accepted: queue, priority, expires)",
        ),
        (
            {
                "task": "tests.taskapp.periodic.tick",
                "schedule": 60,
                "options": {"queue": "nowhere"},
            },
            "nowhere",
        ),
        (
            {"task": "tests.taskapp.periodic.tick", "schedule": 60, "options": {"expires": -1}},
            "options['expires'] must be positive seconds, got -1",
        ),
        (
            {"task": "tests.taskapp.periodic.tick", "schedule": 60, "args": [{1, 2}]},
            "argument 'label'",
        ),
        (
            {"task": "tests.taskapp.periodic.tick", "schedule": 60, "args": "x"},
            "args must be a list",
        ),
        ("daily", "expected a dict with 'task' and 'schedule'"),
    ],
)
def test_bad_entries_fail_the_checks_naming_the_entry(
    backend: MemoryTaskBackend, settings: Any, entry: Any, message: str
) -> None:
    settings.HEADRACE_TASKS_SCHEDULE = {
        "good": {"task": "tests.taskapp.periodic.tick", "schedule": 60},
        "broken": entry,
    }
    [error] = _schedule_errors()
    assert error.startswith("HEADRACE_TASKS_SCHEDULE['broken']: "), error
    assert message in error, error


def test_the_same_name_in_both_settings_and_bad_settings_fail_the_checks(
    backend: MemoryTaskBackend, settings: Any
) -> None:
    entry = {"task": "tests.taskapp.periodic.tick", "schedule": 60}
    settings.HEADRACE_TASKS_SCHEDULE = {"twice": entry}
    settings.CELERY_BEAT_SCHEDULE = {"twice": entry}
    settings.HEADRACE_TASKS_SCHEDULE_CATCH_UP = "sometimes"
    errors = _schedule_errors()
    assert (
        "CELERY_BEAT_SCHEDULE['twice']: the entry is also in HEADRACE_TASKS_SCHEDULE" in errors[1]
    )
    assert errors[0].startswith("HEADRACE_TASKS_SCHEDULE_CATCH_UP: catch_up must be one of")
    settings.CELERY_BEAT_SCHEDULE = ["not", "a", "dict"]
    assert any("CELERY_BEAT_SCHEDULE must be a dict of entries" in e for e in _schedule_errors())


def test_a_task_on_a_backend_that_cannot_run_schedules_fails_the_checks(settings: Any) -> None:
    settings.TASKS = {
        "default": {"BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend"},
        "plain": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    }
    from django.tasks import task as django_task

    plain = django_task(backend="plain")(periodic.not_a_task)
    settings.HEADRACE_TASKS_SCHEDULE = {"elsewhere": {"task": plain, "schedule": 60}}
    [error] = _schedule_errors()
    assert "HEADRACE_TASKS_SCHEDULE['elsewhere']: TASKS['plain'] (ImmediateBackend)" in error
    assert "cannot run schedules" in error
