"""``manage.py runbeat`` and ``manage.py runworker --beat`` as real processes: on the
in-memory backend (each process fires into its own memory), and three of them sharing
PostgreSQL (the database backend) or a redis-server the session starts (the Redis backend),
the leader killed twice. They wait on log lines, bounded."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from django.db import connections

from tests.progrock.processes import ROOT, kill, stop, wait_for_line
from tests.redis_servers import servers

WAIT = 30


def start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.beat_settings"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", [["runbeat"], ["runworker", "--tasks", "--beat"]], ids=["runbeat", "runworker"]
)
def test_a_scheduler_process_fires_slots_and_stops_on_sigterm(command: list[str]) -> None:
    process = start(*command)
    try:
        started = wait_for_line(process, "schedule entr")
        assert "firing 1 schedule entry on TASKS['default'] (time zone UTC)" in started
        fired = wait_for_line(process, "fired slot")
        assert "schedule 'second' fired slot" in fired
        assert "as job beat.second." in fired
        code, rest = stop(process, signal.SIGTERM)
    finally:
        kill(process)
    assert code == 0, rest
    assert "stopped (BeatStatistics(entries=1" in rest


def test_runworker_needs_something_to_run() -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="or give --tasks or --beat"):
        call_command("runworker")


# -- three schedulers sharing a store: PostgreSQL (database backend) and Redis ------------------

FIRED = re.compile(r"fired slot \S+ as job (beat\.second\.\w+)")
LAST_FIRED = re.compile(r"last fired: (\S+)")


def settings_env(store: dict[str, str]) -> dict[str, str]:
    """The environment of a ``manage.py`` process on ``tests.beat_settings`` and ``store``
    (``HEADRACE_PG_*`` or ``HEADRACE_TEST_REDIS``/``_PREFIX``, read by the settings)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.beat_settings",
        "PYTHONPATH": str(ROOT),
        **store,
    }


class Scheduler:
    """A ``runbeat`` process on the test's shared store, its log in a file."""

    def __init__(self, store: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", "runbeat"],
                cwd=ROOT,
                env=settings_env(store),
                stdout=subprocess.DEVNULL,
                stderr=out,
            )

    def text(self) -> str:
        return self.log.read_text()

    def fired(self) -> list[str]:
        return FIRED.findall(self.text())


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def slot_time(job_id: str) -> datetime:
    return datetime.strptime(job_id.rsplit(".", 1)[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def kill_the_leader_twice(store: dict[str, str], tmp_path: Path) -> Counter[str]:
    """The issue's run: a 1-second interval job for 20 s, three ``runbeat`` processes on
    ``store``; the one that fired the latest slot is SIGKILLed (twice) and replaced. The job
    ids the schedulers logged as fired, with how many logged each."""
    schedulers = [Scheduler(store, tmp_path / f"beat-{n}.log") for n in range(3)]
    try:
        for scheduler in schedulers:
            wait_until(lambda s=scheduler: "schedule entry on TASKS" in s.text(), "a start")
        started = time.monotonic()
        for kill_at in (7, 14):
            wait_until(lambda t=kill_at: time.monotonic() - started >= t, f"second {kill_at}")
            leader = max(schedulers, key=lambda s: max(s.fired(), default=""))
            leader.process.kill()
            leader.process.wait()
            schedulers.append(Scheduler(store, tmp_path / f"beat-{len(schedulers)}.log"))
        wait_until(lambda: time.monotonic() - started >= 20, "second 20")
        for scheduler in schedulers:
            if scheduler.process.poll() is None:
                scheduler.process.send_signal(signal.SIGTERM)
        for scheduler in schedulers:
            assert scheduler.process.wait(WAIT) in (0, -signal.SIGKILL), scheduler.text()
    finally:
        for scheduler in schedulers:
            if scheduler.process.poll() is None:
                scheduler.process.kill()
                scheduler.process.wait()
    killed = [s for s in schedulers if s.process.returncode == -signal.SIGKILL]
    assert len(killed) == 2
    return Counter(job for s in schedulers for job in s.fired())


def assert_each_slot_once(claimed: Counter[str], stored: list[str]) -> None:
    """A scheduler killed between its write and its log line fired a slot nobody logged;
    never may two log the same slot, or the store hold a slot twice, or a slot be missing."""
    assert [job for job, n in claimed.items() if n > 1] == []
    assert set(claimed) <= set(stored)
    assert len(stored) == len(set(stored))
    seconds = [slot_time(job).timestamp() for job in sorted(stored)]
    assert seconds == [seconds[0] + n for n in range(len(seconds))]  # no slot missed
    assert len(seconds) >= 15  # about 20 s of slots (the first schedulers start unevenly)


def assert_tasks_schedule_shows(store: dict[str, str], last_job: str) -> None:
    """``manage.py tasks schedule``, a separate process, reads the last fired slot from the
    store the schedulers shared."""
    shown = subprocess.run(
        [sys.executable, "-m", "django", "tasks", "schedule"],
        cwd=ROOT,
        env=settings_env(store),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert shown.returncode == 0, shown.stderr
    assert "second\n  task:       tests.taskapp.periodic.tick (TASKS['default'])" in shown.stdout
    assert LAST_FIRED.findall(shown.stdout) == [slot_time(last_job).isoformat()]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_three_schedulers_on_postgresql_with_the_leader_killed_twice_fire_each_slot_once(
    task_postgres: str, tmp_path: Path
) -> None:
    database = connections[task_postgres].settings_dict
    store = {
        "HEADRACE_PG_NAME": database["NAME"],
        "HEADRACE_PG_HOST": database["HOST"],
        "HEADRACE_PG_PORT": str(database["PORT"]),
    }
    claimed = kill_the_leader_twice(store, tmp_path)
    with connections[task_postgres].cursor() as cursor:
        cursor.execute("SELECT job_id FROM headrace_taskjob WHERE job_id LIKE 'beat.second.%%'")
        stored = [row[0] for row in cursor.fetchall()]
    assert_each_slot_once(claimed, stored)
    assert_tasks_schedule_shows(store, max(stored))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_three_schedulers_on_redis_with_the_leader_killed_twice_fire_each_slot_once(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = servers(request.config).standalone()
    prefix = f"beat-{uuid.uuid4().hex[:12]}"
    store = {"HEADRACE_TEST_REDIS": server.url, "HEADRACE_TEST_PREFIX": prefix}
    claimed = kill_the_leader_twice(store, tmp_path)
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        # Each job is a hash ``<prefix>:{<queue>}:job:<id>``; the enqueue script counts each add.
        stored = [
            key.rsplit(":job:", 1)[1]
            for key in client.scan_iter(match=f"{prefix}:*:job:beat.second.*", count=1000)
        ]
        enqueued = sum(
            int(client.hget(key, "enqueued") or 0)
            for key in client.scan_iter(match=f"{prefix}:*:stats", count=1000)
        )
    finally:
        client.close()
    assert_each_slot_once(claimed, stored)
    assert enqueued == len(stored)  # no slot added twice, even one whose hash was replaced
    assert_tasks_schedule_shows(store, max(stored))
