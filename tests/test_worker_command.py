"""``manage.py runworker`` and ``rundelay``: arguments, errors, and a real process that stops
cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent
WAIT = 20  # seconds: a Django process starting on a busy 2-core machine


def start_command(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``django-admin <args>`` with the ProgRock settings; returns once it reads."""
    full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.progrock.settings", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_line(process, "worker reading")
    return process


def wait_for_line(process: subprocess.Popen[str], text: str) -> str:
    """Read the process's stderr until a line containing ``text`` (bounded by WAIT)."""
    assert process.stderr is not None
    deadline = time.monotonic() + WAIT
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return line
    process.kill()
    process.wait()
    raise AssertionError(f"no line with {text!r} from {process.args}; got:\n{''.join(seen)}")


def stop(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        _, rest = process.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    return process.returncode, rest


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_runworker_stops_cleanly_on_a_signal(signum: int) -> None:
    process = start_command("runworker", "prog-rocker", "--concurrency", "4")
    code, rest = stop(process, signum)
    assert code == 0, rest
    assert "stopping" in rest
    assert "worker stopped" in rest


@pytest.mark.slow
def test_rundelay_runs_and_stops_cleanly() -> None:
    process = start_command("rundelay")
    code, rest = stop(process, signal.SIGTERM)
    assert code == 0, rest


@override_settings(ASGI_APPLICATION="tests.progrock.asgi.application")
def test_runworker_refuses_an_unrouted_channel() -> None:
    with pytest.raises(CommandError, match="no route for channel 'nowhere'"):
        call_command("runworker", "nowhere")


def test_runworker_refuses_an_unknown_layer() -> None:
    with pytest.raises(CommandError, match="no channel layer 'elsewhere'"):
        call_command("runworker", "asgi.delay", "--layer", "elsewhere")


def test_runworker_needs_a_channel() -> None:
    with pytest.raises(CommandError, match="channels"):
        call_command("runworker")
