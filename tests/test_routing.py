"""Routers: protocol type, URL paths (Django patterns, nesting, root_path), channel names."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings
from django.urls import path, re_path

from headrace.exceptions import ConfigurationError
from headrace.routing import (
    ChannelNameRouter,
    ProtocolTypeRouter,
    URLRouter,
    get_default_application,
)
from headrace.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator
from headrace.types import Receive, Scope, Send


def recorder(name: str, seen: list[tuple[str, Scope]]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((name, scope))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": name.encode()})

    return app


async def _get(app: Any, url: str, **scope_extra: Any) -> dict[str, Any]:
    comm = HttpCommunicator(app, "GET", url)
    comm.scope.update(scope_extra)
    return await comm.get_response()


async def test_protocol_type_router_picks_by_scope_type() -> None:
    seen: list[tuple[str, Scope]] = []
    router = ProtocolTypeRouter({"http": recorder("http-app", seen)})
    assert (await _get(router, "/"))["body"] == b"http-app"
    comm = ApplicationCommunicator(router, {"type": "lifespan"})
    await comm.send_input({"type": "lifespan.startup"})
    with pytest.raises(ValueError, match="lifespan"):
        await comm.wait()


async def test_url_router_path_and_re_path_kwargs_args() -> None:
    seen: list[tuple[str, Scope]] = []
    router = URLRouter(
        [
            path("rooms/<int:room>/", recorder("by-path", seen)),
            re_path(r"^files/(\w+)/(\d+)/$", recorder("by-regex", seen)),
            path("defaults/", recorder("defaults", seen), {"mode": "fast"}),
        ]
    )
    assert (await _get(router, "/rooms/42/"))["body"] == b"by-path"
    assert seen[-1][1]["url_route"] == {"args": (), "kwargs": {"room": 42}}
    assert (await _get(router, "/files/abc/7/"))["body"] == b"by-regex"
    assert seen[-1][1]["url_route"] == {"args": ("abc", "7"), "kwargs": {}}
    await _get(router, "/defaults/")
    assert seen[-1][1]["url_route"]["kwargs"] == {"mode": "fast"}


async def test_nested_routers_merge_captures_and_fall_through() -> None:
    seen: list[tuple[str, Scope]] = []
    inner = URLRouter(
        [
            path("chat/<str:room>/", recorder("chat", seen)),
            path("feed/", recorder("feed", seen)),
        ]
    )
    router = URLRouter(
        [
            path("org/<slug:org>/", inner),
            re_path(r"^org/(?P<org>[\w-]+)/other/$", recorder("other", seen)),
        ]
    )
    assert (await _get(router, "/org/acme/chat/lobby/"))["body"] == b"chat"
    assert seen[-1][1]["url_route"]["kwargs"] == {"org": "acme", "room": "lobby"}
    assert (await _get(router, "/org/acme/other/"))["body"] == b"other"


async def test_root_path_is_stripped_by_the_outermost_router() -> None:
    seen: list[tuple[str, Scope]] = []
    router = URLRouter([path("ws/", recorder("ws", seen))])
    response = await _get(router, "/prefix/ws/", root_path="/prefix")
    assert response["body"] == b"ws"
    response = await _get(router, "/elsewhere/ws/", root_path="/prefix")
    assert response["status"] == 404


async def test_no_route_answers_404_for_http_and_refuses_websocket() -> None:
    router = URLRouter([path("here/", recorder("here", []))])
    response = await _get(router, "/not-here/")
    assert response["status"] == 404
    assert b"not-here" in response["body"]
    comm = WebsocketCommunicator(router, "/not-here/")
    assert await comm.connect() == (False, 1008)


def test_include_is_refused_at_startup() -> None:
    from django.urls import include

    with pytest.raises(ConfigurationError, match="include"):
        URLRouter([path("x/", include([]))])


async def test_channel_name_router() -> None:
    seen: list[tuple[str, Scope]] = []

    def consumer(name: str) -> Any:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append((name, scope))

        return app

    router = ChannelNameRouter({"thumbnails": consumer("thumbs")})
    await ApplicationCommunicator(router, {"type": "channel", "channel": "thumbnails"}).wait()
    assert seen[0][0] == "thumbs"
    comm = ApplicationCommunicator(router, {"type": "channel", "channel": "unknown"})
    with pytest.raises(ValueError, match="unknown"):
        await comm.wait()
    comm = ApplicationCommunicator(router, {"type": "channel"})
    with pytest.raises(ValueError, match="channel"):
        await comm.wait()


def test_get_default_application() -> None:
    from tests.chatapp.asgi import application

    assert get_default_application() is application
    with (
        override_settings(ASGI_APPLICATION="tests.chatapp.asgi.nothing"),
        pytest.raises(ConfigurationError, match="nothing"),
    ):
        get_default_application()
    with (
        override_settings(ASGI_APPLICATION="no_such_module.app"),
        pytest.raises(ConfigurationError, match="no_such_module"),
    ):
        get_default_application()
    with override_settings(ASGI_APPLICATION=None), pytest.raises(ConfigurationError):
        get_default_application()
