"""The interface server: runserver, safe limits and bad input, with real clients on real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings
from websockets.exceptions import ConnectionClosed

from headrace.server import ServerOptions, uvicorn_config
from headrace.settings import Limits, limits
from headrace.testing import LiveServer
from tests.conftest_consumers import recv_json, ws_connect

ROOT = Path(__file__).resolve().parent.parent


# -- limits ----------------------------------------------------------------------------------


def test_limits_defaults_and_settings() -> None:
    assert limits() == Limits()
    assert limits().websocket_max_message_size == 1024 * 1024
    with override_settings(
        HEADRACE_WEBSOCKET_MAX_MESSAGE_SIZE=4096, HEADRACE_WEBSOCKET_SLOW_CLIENT="drop-oldest"
    ):
        assert limits().websocket_max_message_size == 4096
        assert limits().websocket_slow_client == "drop-oldest"
    assert limits() == Limits()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("websocket_max_message_size", 0, "MAX_MESSAGE_SIZE"),
        ("websocket_outbox_size", 0, "OUTBOX_SIZE"),
        ("websocket_slow_client", "block", "'close' or 'drop-oldest'"),
        ("websocket_handshake_timeout", 0, "HANDSHAKE_TIMEOUT"),
        ("websocket_send_timeout", 0, "SEND_TIMEOUT"),
        ("sync_threads", 0, "SYNC_THREADS"),
    ],
)
def test_bad_limits_are_refused_with_the_setting_name(
    name: str, value: object, message: str
) -> None:
    from headrace.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        Limits().using(**{name: value})


def test_uvicorn_gets_the_limits() -> None:
    lim = Limits(websocket_max_message_size=2048, websocket_ping_interval=5.0)
    config = uvicorn_config(lambda *a: None, ServerOptions(port=0, limits=lim))  # type: ignore[arg-type, return-value]
    assert config.ws_max_size == 2048
    assert config.ws_ping_interval == 5.0
    assert config.ws_ping_timeout == 20.0


# -- bad input over real sockets -------------------------------------------------------------


@pytest.fixture
def server(transactional_db: None) -> Iterator[LiveServer]:
    """The chat app on a live server, with small limits (it reaches the database for sessions)."""
    with (
        override_settings(
            HEADRACE_WEBSOCKET_MAX_MESSAGE_SIZE=4096, HEADRACE_WEBSOCKET_OUTBOX_SIZE=4
        ),
        LiveServer() as live,
    ):
        yield live


async def _bystander_still_served(server: LiveServer) -> None:
    async with ws_connect(f"{server.ws_url}/ws/echo/") as other:
        await other.send(json.dumps({"hello": 1}))
        assert await recv_json(other) == {"echo": {"hello": 1}}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{this is not json", 1007),
        ("[" * 2000 + "]" * 2000, 1007),
        (b'{"binary": true}', 1003),
        (json.dumps({"boom": True}), 1011),
        ("x" * 5000, 1009),
        (b"x" * 5000, 1009),
    ],
    ids=[
        "malformed-json",
        "json-nested-too-deep",
        "binary-on-json",
        "handler-raises",
        "oversize-text",
        "oversize-binary",
    ],
)
async def test_bad_input_closes_only_that_connection(
    server: LiveServer, frame: str | bytes, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with ws_connect(f"{server.ws_url}/ws/echo/") as bystander:
        async with ws_connect(f"{server.ws_url}/ws/echo/") as ws:
            with caplog.at_level(logging.WARNING, logger="headrace"):
                await ws.send(frame)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == code
            if code != 1011 and isinstance(frame, str) and len(frame) < 4096:
                # Bad input is not a bug: one warning, no traceback.
                logged = [r for r in caplog.records if r.name.startswith("headrace")]
                assert [(r.levelno, r.exc_info) for r in logged] == [(logging.WARNING, None)]
        await bystander.send(json.dumps({"still": "served"}))
        assert await recv_json(bystander) == {"echo": {"still": "served"}}
    await _bystander_still_served(server)


@pytest.mark.slow
async def test_slow_client_is_closed_with_1013_and_memory_stays_bounded(
    server: LiveServer,
) -> None:
    """The client stops reading; the server sends until the outbox (4 frames) overflows."""
    async with (
        ws_connect(f"{server.ws_url}/ws/echo/") as watcher,
        ws_connect(f"{server.ws_url}/ws/echo/", max_queue=1, max_size=None, compression=None) as ws,
    ):
        await watcher.send(json.dumps({"watch": True}))
        assert await recv_json(watcher) == {"watching": True}
        await ws.send(json.dumps({"flood": 600, "size": 60_000}))  # 36 MB if nobody stopped it
        # Not reading `ws` until the server has finished its loop makes this client slow.
        assert await recv_json(watcher) == {"flooded": True, "closed": True}
        received = 0
        try:
            while True:
                await ws.recv()
                received += 1
        except ConnectionClosed:
            pass
        assert ws.close_code == 1013
        assert received < 600
    await _bystander_still_served(server)


@pytest.mark.slow
async def test_sync_consumer_over_a_real_socket(server: LiveServer) -> None:
    async with ws_connect(f"{server.ws_url}/ws/sync-echo/") as ws:
        await ws.send("ping")
        assert await ws.recv() == "sync:ping"


@pytest.mark.slow
async def test_unknown_path_is_refused_and_http_404(server: LiveServer) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(f"{server.ws_url}/ws/nowhere/"):
            pass
    assert refused.value.response.status_code == 403
    await _bystander_still_served(server)


# -- runserver -------------------------------------------------------------------------------


def _start_runserver(
    *extra: str, settings: str = "tests.settings", **environ: str
) -> tuple[subprocess.Popen[str], int, str]:
    """Start runserver on a free port; returns the process, the port and what it printed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE=settings, **environ)
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", *extra, "127.0.0.1:0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    printed = []
    for line in process.stdout:
        printed.append(line)
        found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return process, int(found.group(1)), "".join(printed)
    process.kill()
    raise AssertionError("runserver exited before listening")


def _stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


@pytest.mark.slow
@pytest.mark.parametrize("reload", [False, True], ids=["noreload", "autoreload"])
async def test_runserver_serves_http_websocket_and_static(reload: bool) -> None:
    # With the reloader the system checks are skipped, without it they run: both paths work.
    mode = ["--skip-checks"] if reload else ["--noreload"]
    process, port, _ = _start_runserver("--insecure", *mode)
    try:
        status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/")
        assert (status, body) == (200, b"chat index")
        status, body = await asyncio.to_thread(
            _get, f"http://127.0.0.1:{port}/static/chatapp/chat.css"
        )
        assert status == 200
        assert b"teal" in body
        async with ws_connect(f"ws://127.0.0.1:{port}/ws/chat/room1/") as ws:
            await ws.send(json.dumps({"message": "via runserver"}))
            assert await recv_json(ws) == {"message": "via runserver"}
    finally:
        output = _stop(process)
    # One INFO line per connection (uvicorn's and the websockets library's are filtered out).
    assert output.count('WebSocket CONNECT "/ws/chat/room1/"') == 1
    assert "DISCONNECT" not in output
    assert '"WebSocket /ws/chat/room1/"' not in output
    assert "connection open" not in output


def test_system_check_warns_when_staticfiles_shadows_runserver() -> None:
    from django.core.checks import run_checks

    assert not [m for m in run_checks() if m.id == "headrace.W001"]
    with override_settings(
        INSTALLED_APPS=["django.contrib.staticfiles", "headrace", "django.contrib.auth"]
    ):
        from headrace.checks import check_runserver_order

        warnings = check_runserver_order()
    assert [w.id for w in warnings] == ["headrace.W001"]


@pytest.mark.slow
def test_background_coroutines_live_as_long_as_the_server() -> None:
    """The seam runserver uses for in-process workers: started with the server, cancelled
    when it stops."""
    import threading

    from headrace.server import Server

    started = threading.Event()
    cancelled = threading.Event()

    async def background() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("no requests in this test")

    server = Server(
        app,  # type: ignore[arg-type]
        ServerOptions(port=0, log_level="warning", configure_logging=False),
        background=[background],
    )
    server.start_in_thread()
    assert started.wait(5)
    assert not cancelled.is_set()
    server.stop()
    assert cancelled.wait(5)


@pytest.mark.parametrize(
    ("uvicorn_options", "expected"),
    [({}, "uvloop"), ({"loop": "asyncio"}, "asyncio")],
    ids=["default-uvloop", "asyncio-on-request"],
)
@pytest.mark.parametrize("foreground", [False, True], ids=["start_in_thread", "run"])
def test_the_server_runs_on_the_loop_uvicorn_would_choose(
    uvicorn_options: dict[str, str], expected: str, foreground: bool
) -> None:
    """uvloop when installed (as ``uvicorn mysite.asgi:application`` does), unless the
    options name another loop."""
    import threading

    from headrace.server import Server

    seen: list[str] = []
    ran = threading.Event()

    async def background() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__.split(".")[0])
        ran.set()
        await asyncio.Event().wait()

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("no requests in this test")

    server = Server(
        app,  # type: ignore[arg-type]
        ServerOptions(
            port=0, log_level="warning", configure_logging=False, uvicorn_options=uvicorn_options
        ),
        background=[background],
    )
    if foreground:
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        assert ran.wait(5)
        server.stop()
        thread.join(5)
        assert not thread.is_alive()
    else:
        server.start_in_thread()
        assert ran.wait(5)
        server.stop()
    assert seen == [expected]


@pytest.mark.slow
@pytest.mark.parametrize("embedded", [True, False], ids=["embedded", "switched-off"])
async def test_runserver_runs_the_routed_workers_in_process(embedded: bool) -> None:
    """One command runs the whole system: ProgRock's worker channel and asgi.delay are served
    inside runserver on the in-memory layer, unless HEADRACE_EMBEDDED_WORKERS is off."""
    environ = {"PROGROCK_DELAY_MS": "10", "PROGROCK_STEP": "25"}
    settings = "tests.progrock.settings"
    if not embedded:
        settings = "tests.test_server_no_workers_settings"
    process, port, printed = _start_runserver("--noreload", settings=settings, **environ)
    try:
        async with ws_connect(f"ws://127.0.0.1:{port}/prog/") as ws:
            assert await recv_json(ws) == {"accept": True}
            await ws.send(json.dumps({"action": "start"}))
            if embedded:
                progress = [await recv_json(ws) for _ in range(5)]
                assert progress[-1] == {"complete": True, "progress": 100}
            else:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.5)
    finally:
        output = _stop(process)
    announced = re.search(
        r"running workers in this process for .*prog-rocker.*asgi\.delay", printed
    )
    assert bool(announced) is embedded
    assert "Traceback" not in output
