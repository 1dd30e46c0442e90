"""Routers and middleware return whatever the inner application returns, as Channels' do."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import path

from headrace.auth import AuthMiddleware, AuthMiddlewareStack
from headrace.middleware import BaseMiddleware
from headrace.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter
from headrace.sessions import CookieMiddleware, SessionMiddleware, SessionMiddlewareStack
from headrace.types import Message, Receive, Scope, Send

RESULT = object()


async def inner(scope: Scope, receive: Receive, send: Send) -> object:
    return RESULT


async def receive() -> Message:
    raise AssertionError("the inner application does not receive")


async def send(message: Message) -> None:
    raise AssertionError("the inner application does not send")


def _scope(kind: str = "http", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "path": "/room/", "headers": [], **extra}


@pytest.mark.parametrize(
    ("wrap", "scope"),
    [
        (lambda app: ProtocolTypeRouter({"http": app}), _scope()),
        (lambda app: URLRouter([path("room/", app)]), _scope()),
        (lambda app: URLRouter([path("", URLRouter([path("room/", app)]))]), _scope()),
        (lambda app: ChannelNameRouter({"thumbs": app}), _scope("channel", channel="thumbs")),
        (BaseMiddleware, _scope()),
        (CookieMiddleware, _scope()),
        (lambda app: CookieMiddleware(SessionMiddleware(app)), _scope()),
        (SessionMiddlewareStack, _scope()),
        (lambda app: SessionMiddleware(app), _scope(session=object())),
        (lambda app: AuthMiddleware(app), _scope(session={})),
        (AuthMiddlewareStack, _scope()),
        (
            lambda app: ProtocolTypeRouter(
                {"websocket": AuthMiddlewareStack(URLRouter([path("room/", app)]))}
            ),
            _scope("websocket"),
        ),
    ],
)
@pytest.mark.django_db
async def test_wrappers_return_what_the_inner_application_returns(
    wrap: Any, scope: dict[str, Any]
) -> None:
    assert await wrap(inner)(scope, receive, send) is RESULT
