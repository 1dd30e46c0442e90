"""Start ``manage.py`` commands (runworker, rundelay) as real processes for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
WAIT = 30  # seconds: Django processes starting on a busy 2-core machine


def start_command(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``django-admin <args>`` with the ProgRock settings; returns once it is reading."""
    return start_command_reading(*args, env=env)[0]


def start_command_reading(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """:func:`start_command`, also returning the worker's "worker reading ..." line."""
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
    return process, wait_for_line(process, "worker reading")


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
    """Send ``signum``; wait for the exit; return (exit status, the rest of stderr)."""
    process.send_signal(signum)
    try:
        _, rest = process.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    return process.returncode, rest


def kill(process: subprocess.Popen[str]) -> None:
    """Make sure ``process`` is gone (test clean-up after a failure)."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=WAIT)
