"""``manage.py runworker`` and ``rundelay``: arguments, errors, and a real process that stops
cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import signal

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from tests.progrock.processes import start_command, stop


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


def test_rundelay_refuses_an_unknown_layer() -> None:
    with pytest.raises(CommandError, match="no channel layer 'elsewhere'"):
        call_command("rundelay", "--layer", "elsewhere")


def test_runworker_reports_a_broken_layer_setting(settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "no.such.Layer"}}
    with pytest.raises(CommandError, match="cannot be imported"):
        call_command("runworker", "asgi.delay")


def test_runworker_needs_a_channel() -> None:
    with pytest.raises(CommandError, match="channels"):
        call_command("runworker")
