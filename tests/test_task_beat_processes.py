"""``manage.py runbeat`` and ``manage.py runworker --beat`` as real processes: on the
in-memory backend (each process fires into its own memory), and three of them sharing
PostgreSQL through the database backend. They wait on log lines, bounded."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from tests.progrock.processes import ROOT, kill, stop, wait_for_line

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


# -- three schedulers on PostgreSQL --------------------------------------------------------------

FIRED = re.compile(r"fired slot \S+ as job (beat\.second\.\w+)")


class Scheduler:
    """A ``runbeat`` process on the test's PostgreSQL database, its log in a file."""

    def __init__(self, database: dict[str, Any], log: Path) -> None:
        self.log = log
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.beat_settings",
            "HEADRACE_PG_NAME": database["NAME"],
            "HEADRACE_PG_HOST": database["HOST"],
            "HEADRACE_PG_PORT": str(database["PORT"]),
            "PYTHONPATH": str(ROOT),
        }
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", "runbeat"],
                cwd=ROOT,
                env=env,
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


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_three_schedulers_on_postgresql_with_the_leader_killed_twice_fire_each_slot_once(
    task_postgres: str, tmp_path: Path
) -> None:
    """The issue's test: a 1-second interval job for 20 s, three ``runbeat`` processes; the
    one that fired the latest slot is SIGKILLed (twice) and replaced. Each slot is enqueued
    exactly once, with no gap."""
    database = connections[task_postgres].settings_dict
    schedulers = [Scheduler(database, tmp_path / f"beat-{n}.log") for n in range(3)]
    try:
        for scheduler in schedulers:
            wait_until(lambda s=scheduler: "schedule entry on TASKS" in s.text(), "a start")
        started = time.monotonic()
        for kill_at in (7, 14):
            wait_until(lambda t=kill_at: time.monotonic() - started >= t, f"second {kill_at}")
            leader = max(schedulers, key=lambda s: max(s.fired(), default=""))
            leader.process.kill()
            leader.process.wait()
            schedulers.append(Scheduler(database, tmp_path / f"beat-{len(schedulers)}.log"))
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
    claimed = Counter(job for s in schedulers for job in s.fired())
    with connections[task_postgres].cursor() as cursor:
        cursor.execute("SELECT job_id FROM headrace_taskjob WHERE job_id LIKE 'beat.second.%%'")
        stored = sorted(row[0] for row in cursor.fetchall())
    # A scheduler killed between its commit and its log line fired a slot nobody logged;
    # never may two log the same slot, or the table hold a slot twice.
    assert [job for job, n in claimed.items() if n > 1] == []
    assert set(claimed) <= set(stored)
    assert len(stored) == len(set(stored))
    seconds = [
        datetime.strptime(job.rsplit(".", 1)[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        for job in stored
    ]
    assert seconds == [seconds[0] + n for n in range(len(seconds))]  # no slot missed
    assert len(seconds) >= 15  # about 20 s of slots (the first schedulers start unevenly)
