"""Cookies, sessions and auth in the scope; login/logout from a consumer."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore

from headrace.auth import AuthMiddleware, AuthMiddlewareStack, get_user, login, logout
from headrace.generic.http import AsyncHttpConsumer
from headrace.generic.websocket import AsyncJsonWebsocketConsumer
from headrace.sessions import CookieMiddleware, SessionMiddleware, SessionMiddlewareStack
from headrace.testing import HttpCommunicator, WebsocketCommunicator

# Handlers reach the database from other threads, so data must really be committed.
pytestmark = pytest.mark.django_db(transaction=True)


class Who(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self._report()

    async def _report(self) -> None:
        user = self.scope["user"]
        await self.send_json({"user": user.get_username(), "auth": user.is_authenticated})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content["do"] == "login":
            user = await get_user_model().objects.aget(username=content["name"])
            await login(self.scope, user)
            await self.scope["session"].asave()
        else:
            await logout(self.scope)
        await self._report()


async def _make_user(name: str) -> Any:
    return await sync_to_async(get_user_model().objects.create_user)(name, password="pw")


async def _session_for(user: Any) -> str:
    def make() -> str:
        store = SessionStore()
        store["_auth_user_id"] = str(user.pk)
        store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        store["_auth_user_hash"] = user.get_session_auth_hash()
        store.save()
        return str(store.session_key)

    return await sync_to_async(make)()


def _cookie(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}; other=1".encode())]


async def test_cookie_middleware_parses_all_cookie_headers() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope["cookies"])

    comm = HttpCommunicator(
        CookieMiddleware(app), "GET", "/", headers=[(b"cookie", b"a=1; b=2"), (b"cookie", b"c=3")]
    )
    await comm.wait()
    assert seen == {"a": "1", "b": "2", "c": "3"}


async def test_user_from_session_cookie() -> None:
    ada = await _make_user("ada")
    key = await _session_for(ada)
    comm = WebsocketCommunicator(AuthMiddlewareStack(Who.as_asgi()), "/", headers=_cookie(key))
    await comm.connect()
    assert await comm.receive_json_from() == {"user": "ada", "auth": True}
    await comm.disconnect()


async def test_anonymous_without_or_with_bad_cookie() -> None:
    for headers in ([], _cookie("forged-key")):
        comm = WebsocketCommunicator(AuthMiddlewareStack(Who.as_asgi()), "/", headers=headers)
        await comm.connect()
        assert await comm.receive_json_from() == {"user": "", "auth": False}
        await comm.disconnect()


async def test_changed_password_voids_the_session() -> None:
    ada = await _make_user("ada")
    key = await _session_for(ada)

    def change() -> None:
        ada.set_password("new")
        ada.save()

    await sync_to_async(change)()
    comm = WebsocketCommunicator(AuthMiddlewareStack(Who.as_asgi()), "/", headers=_cookie(key))
    await comm.connect()
    assert await comm.receive_json_from() == {"user": "", "auth": False}
    await comm.disconnect()


async def test_login_and_logout_from_a_consumer() -> None:
    await _make_user("grace")
    comm = WebsocketCommunicator(AuthMiddlewareStack(Who.as_asgi()), "/")
    await comm.connect()
    assert await comm.receive_json_from() == {"user": "", "auth": False}
    await comm.send_json_to({"do": "login", "name": "grace"})
    assert await comm.receive_json_from() == {"user": "grace", "auth": True}
    await comm.send_json_to({"do": "logout"})
    assert await comm.receive_json_from() == {"user": "", "auth": False}
    await comm.disconnect()


async def test_session_saved_and_cookie_set_on_http_response() -> None:
    class Counter(AsyncHttpConsumer):
        async def handle(self, body: bytes) -> None:
            session = self.scope["session"]
            count = await session.aget("n", 0) + 1
            await session.aset("n", count)
            await self.send_response(200, str(count).encode())

    app = SessionMiddlewareStack(Counter.as_asgi())
    response = await HttpCommunicator(app, "GET", "/").get_response()
    assert response["body"] == b"1"
    cookies = [v for k, v in response["headers"] if k == b"set-cookie"]
    assert len(cookies) == 1
    key = cookies[0].split(b";")[0].split(b"=", 1)[1].decode()
    again = await HttpCommunicator(app, "GET", "/", headers=_cookie(key)).get_response()
    assert again["body"] == b"2"


async def test_middleware_order_mistakes_are_clear() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ValueError, match="CookieMiddleware"):
        await HttpCommunicator(SessionMiddleware(app), "GET", "/").wait()
    with pytest.raises(ValueError, match="SessionMiddleware"):
        await HttpCommunicator(AuthMiddleware(app), "GET", "/").wait()
    with pytest.raises(ValueError, match="SessionMiddleware"):
        await get_user({})
