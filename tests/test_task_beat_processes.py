"""``manage.py runbeat`` and ``manage.py runworker --beat`` as real processes (in-memory
backend: each process fires into its own memory). They wait on log lines, bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.progrock.processes import ROOT, kill, stop, wait_for_line


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
