"""ALLOWED_HOSTS for consumers (WebSocket, SSE, HTTP) and the unguarded-route system check."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from django.urls import path, re_path
from websockets.exceptions import InvalidStatus

from headrace.auth import AuthMiddlewareStack
from headrace.checks import check_websocket_origins, websocket_routes
from headrace.generic.http import AsyncHttpConsumer
from headrace.generic.sse import AsyncSseConsumer
from headrace.generic.websocket import AsyncWebsocketConsumer
from headrace.routing import ProtocolTypeRouter, URLRouter
from headrace.security.hosts import host_of, refuse_disallowed_hosts
from headrace.security.websocket import AllowedHostsOriginValidator, OriginValidator
from headrace.testing import HttpCommunicator, LiveServer, WebsocketCommunicator
from tests.conftest_consumers import recv_json, ws_connect

HOSTS = ["chat.example.com", ".example.org"]


async def _websocket(host: bytes | None, *extra: tuple[bytes, bytes]) -> tuple[bool, Any]:
    headers = [(b"host", host)] if host is not None else []
    comm = WebsocketCommunicator(AsyncWebsocketConsumer.as_asgi(), "/ws/", headers=headers)
    comm.scope["headers"] += list(extra)
    comm.scope["extensions"] = {"websocket.http.response": {}}
    accepted, detail = await comm.connect()
    await comm.disconnect(code=1000 if accepted else 1006)
    return accepted, detail


@override_settings(ALLOWED_HOSTS=HOSTS)
@pytest.mark.parametrize(
    ("host", "accepted"),
    [
        (b"chat.example.com", True),
        (b"chat.example.com:8443", True),
        (b"CHAT.example.com.", True),  # case and a trailing dot, as Django treats them
        (b"example.org", True),
        (b"deep.sub.example.org:80", True),
        (b"evil.com", False),
        (b"chat.example.com.evil.com", False),
        (b"chat.example.com@evil.com", False),
        (b"bad host", False),
        (b"", False),
    ],
)
async def test_websocket_handshakes_are_checked_against_allowed_hosts(
    host: bytes, accepted: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headrace.security")
    result = await _websocket(host)
    refusals = [r for r in caplog.records if r.name == "headrace.security"]
    if accepted:
        assert result[0] is True
        assert refusals == []
    else:
        assert result == (False, 1000)  # closed before accept: the server answers 403
        assert len(refusals) == 1
        assert "refused WebSocket" in refusals[0].getMessage()
        assert "Host" in refusals[0].getMessage()


@override_settings(ALLOWED_HOSTS=HOSTS)
async def test_several_host_headers_are_refused() -> None:
    assert await _websocket(b"chat.example.com", (b"host", b"chat.example.com")) == (False, 1000)


@override_settings(ALLOWED_HOSTS=HOSTS)
async def test_without_a_host_header_the_server_address_is_checked() -> None:
    comm = WebsocketCommunicator(AsyncWebsocketConsumer.as_asgi(), "/ws/")
    comm.scope["server"] = ("chat.example.com", 80)
    assert (await comm.connect())[0] is True
    await comm.disconnect()
    comm = WebsocketCommunicator(AsyncWebsocketConsumer.as_asgi(), "/ws/")
    comm.scope["server"] = ("10.1.2.3", 8000)
    assert (await comm.connect())[0] is False


def test_host_is_found_as_django_finds_it() -> None:
    plain = {"headers": [(b"host", b"a.example:81")], "server": ("10.0.0.1", 8000)}
    assert host_of(plain) == "a.example:81"
    assert host_of({"headers": [], "server": ("10.0.0.1", 80), "scheme": "ws"}) == "10.0.0.1"
    assert host_of({"headers": [], "server": ("h", 443), "scheme": "wss"}) == "h"
    assert host_of({"headers": [], "server": ("h", 443), "scheme": "ws"}) == "h:443"
    assert host_of({"headers": []}) is None  # a hand-built scope: nothing to check
    forwarded = {"headers": [(b"host", b"inner"), (b"x-forwarded-host", b"outer.example")]}
    assert host_of(forwarded) == "inner"
    with override_settings(USE_X_FORWARDED_HOST=True):
        assert host_of(forwarded) == "outer.example"
    behind = {"headers": [(b"x-forwarded-port", b"443")], "server": ("h", 8000), "scheme": "ws"}
    with override_settings(USE_X_FORWARDED_PORT=True):
        assert host_of(behind) == "h:443"


@override_settings(ALLOWED_HOSTS=[], DEBUG=True)
@pytest.mark.parametrize(
    ("host", "accepted"),
    [
        (b"localhost:8000", True),
        (b"sub.localhost", True),
        (b"127.0.0.1:8000", True),
        (b"[::1]:8000", True),
        (b"example.com", False),
    ],
)
async def test_debug_with_no_allowed_hosts_allows_localhost_variants_like_django(
    host: bytes, accepted: bool
) -> None:
    assert (await _websocket(host))[0] is accepted


@override_settings(ALLOWED_HOSTS=["*"])
async def test_a_wildcard_turns_the_check_off() -> None:
    assert (await _websocket(b"anything.evil"))[0] is True


class Stream(AsyncSseConsumer):
    keepalive_interval = None


class Hello(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_response(200, b"hello")


@override_settings(ALLOWED_HOSTS=HOSTS)
@pytest.mark.parametrize("consumer", [Stream, Hello], ids=["sse", "http"])
async def test_http_consumers_answer_400_to_a_disallowed_host(
    consumer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headrace.security")
    app = consumer.as_asgi()
    refused = await HttpCommunicator(
        app, "GET", "/x/", headers=[(b"host", b"evil.com")]
    ).get_response()
    assert refused["status"] == 400
    assert [r.getMessage() for r in caplog.records if r.name == "headrace.security"] == [
        'refused HTTP "GET" "/x/": Host "evil.com" is not in ALLOWED_HOSTS'
    ]
    if consumer is Hello:
        allowed = HttpCommunicator(app, "GET", "/x/", headers=[(b"host", b"chat.example.com")])
        assert (await allowed.get_response())["status"] == 200


async def test_the_guard_wraps_any_asgi_app_and_lets_other_scopes_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    guarded = refuse_disallowed_hosts(app)
    await guarded({"type": "channel", "channel": "x"}, None, None)
    await guarded({"type": "lifespan"}, None, None)
    assert seen == ["channel", "lifespan"]


# -- a real server, real clients, a forged Host ----------------------------------------------


@pytest.fixture
def live(transactional_db: None) -> Iterator[LiveServer]:
    with LiveServer() as server:
        yield server


@pytest.mark.slow
async def test_forged_host_is_refused_by_a_real_server(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """DNS rebinding: the socket reaches our server, the Host names the attacker's domain.
    The Origin is one the validator allows, so only the host check stands in the way."""
    caplog.set_level(logging.WARNING, logger="headrace.security")
    origin = f"http://127.0.0.1:{live.port}"
    forged = f"ws://evil.example:{live.port}/ws/echo/"
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(forged, origin=origin, host="127.0.0.1", port=live.port):
            pass
    assert refused.value.response.status_code == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "headrace.security"]
    assert lines == [
        f'refused WebSocket "/ws/echo/": Host "evil.example:{live.port}" is not in ALLOWED_HOSTS'
    ]
    # The real host still works.
    async with ws_connect(f"{live.ws_url}/ws/echo/") as ws:
        await ws.send('{"hi": 1}')
        assert await recv_json(ws) == {"echo": {"hi": 1}}


@pytest.mark.slow
async def test_event_stream_with_a_forged_host_gets_400_from_a_real_server(
    live: LiveServer,
) -> None:
    def get(host: str) -> int:
        request = urllib.request.Request(f"{live.url}/events/", headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    assert await asyncio.to_thread(get, "evil.example") == 400


# -- the system check ------------------------------------------------------------------------

consumer = AsyncWebsocketConsumer.as_asgi()
unguarded_application = ProtocolTypeRouter(
    {
        "websocket": AuthMiddlewareStack(
            URLRouter(
                [
                    path("open/", consumer),
                    path(
                        "nested/",
                        URLRouter([re_path(r"^a/$", consumer), path("b/", consumer)]),
                    ),
                    path("safe/", OriginValidator(consumer, ["https://example.com"])),
                    path("star/", OriginValidator(consumer, ["*"])),
                ]
            )
        )
    }
)
guarded_application = ProtocolTypeRouter(
    {"websocket": AllowedHostsOriginValidator(URLRouter([path("ws/", consumer)]))}
)


def test_websocket_routes_are_found_through_middleware_and_nested_routers() -> None:
    assert websocket_routes(unguarded_application) == [
        ("open/", False),
        ("nested/^a/$", False),
        ("nested/b/", False),
        ("safe/", True),
        ("star/", False),  # an origin validator allowing "*" guards nothing
    ]
    assert websocket_routes(guarded_application) == [("ws/", True)]
    assert websocket_routes(ProtocolTypeRouter({"http": consumer})) == []


@override_settings(ASGI_APPLICATION="tests.test_hosts.unguarded_application", DEBUG=False)
def test_check_warns_about_each_unguarded_route() -> None:
    warnings = check_websocket_origins()
    assert [(w.id, w.obj) for w in warnings] == [
        ("headrace.W002", "open/"),
        ("headrace.W002", "nested/^a/$"),
        ("headrace.W002", "nested/b/"),
        ("headrace.W002", "star/"),
    ]
    assert "AllowedHostsOriginValidator" in (warnings[0].hint or "")


@pytest.mark.parametrize(
    "changes",
    [
        {"ASGI_APPLICATION": "tests.test_hosts.unguarded_application", "DEBUG": True},
        {"ASGI_APPLICATION": "tests.test_hosts.guarded_application", "DEBUG": False},
        {"ASGI_APPLICATION": "tests.nowhere.application", "DEBUG": False},
    ],
    ids=["debug", "guarded", "unimportable"],
)
def test_check_is_quiet_in_debug_when_guarded_or_unimportable(changes: dict[str, Any]) -> None:
    with override_settings(**changes):
        assert check_websocket_origins() == []


def test_the_test_projects_application_passes_the_check() -> None:
    from django.core.checks import run_checks

    assert not [m for m in run_checks() if m.id == "headrace.W002"]
