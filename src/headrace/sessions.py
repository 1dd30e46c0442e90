"""Cookies and Django sessions in the scope: ``scope["cookies"]`` and ``scope["session"]``.

``SessionMiddleware`` gives every HTTP or WebSocket connection the Django session named by its
session cookie, loaded lazily (no database query until the session is first read). For HTTP
responses a modified session is saved and its cookie set on ``http.response.start``, as Django
does; WebSocket consumers save explicitly with ``await scope["session"].asave()``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.core.exceptions import SuspiciousOperation
from django.http import parse_cookie
from django.http.cookie import SimpleCookie
from django.utils import timezone
from django.utils.functional import LazyObject, empty
from django.utils.http import http_date

from .types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CookieMiddleware", "SessionMiddleware", "SessionMiddlewareStack"]


class CookieMiddleware:
    """Parses the ``Cookie`` header into ``scope["cookies"]`` (a dict, like ``request.COOKIES``)."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if "headers" not in scope:
            raise ValueError(
                "CookieMiddleware needs a scope with 'headers' (HTTP or WebSocket connections)"
            )
        cookies: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookies.update(parse_cookie(value.decode("latin1")))
        return await self.inner(dict(scope, cookies=cookies), receive, send)

    @classmethod
    def set_cookie(
        cls,
        message: Message,
        key: str,
        value: str = "",
        max_age: int | None = None,
        expires: str | datetime | None = None,
        path: str = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header to an ``http.response.start`` message."""
        jar: SimpleCookie = SimpleCookie()
        jar[key] = str(value)
        morsel = jar[key]
        if isinstance(expires, datetime):
            if timezone.is_naive(expires):
                expires = timezone.make_aware(expires, UTC)
            delta = expires - timezone.now() + timedelta(seconds=1)
            max_age = max(0, int(delta.total_seconds()))
            expires = None
        if expires is not None:
            morsel["expires"] = expires
        if max_age is not None:
            morsel["max-age"] = str(max_age)
            if not expires:
                morsel["expires"] = http_date(time.time() + max_age)
        if path is not None:
            morsel["path"] = path
        if domain is not None:
            morsel["domain"] = domain
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite is not None:
            if samesite.lower() not in ("strict", "lax", "none"):
                raise ValueError("samesite must be 'strict', 'lax' or 'none'")
            morsel["samesite"] = samesite
        header = morsel.output(header="").strip().encode("latin1")
        message.setdefault("headers", []).append((b"set-cookie", header))

    @classmethod
    def delete_cookie(
        cls, message: Message, key: str, path: str = "/", domain: str | None = None
    ) -> None:
        """Add a ``Set-Cookie`` header that expires ``key`` now."""
        cls.set_cookie(
            message,
            key,
            max_age=0,
            path=path,
            domain=domain,
            expires="Thu, 01 Jan 1970 00:00:00 GMT",
        )


class _LazySession(LazyObject):  # type: ignore[type-arg]
    """The session, created on first use from the cookie's key."""

    def __init__(self, session_key: str | None) -> None:
        super().__init__()
        self.__dict__["_session_key"] = session_key

    def _setup(self) -> None:
        store = import_module(settings.SESSION_ENGINE).SessionStore
        self._wrapped = store(self.__dict__["_session_key"])

    @property
    def is_loaded(self) -> bool:
        return self._wrapped is not empty


class SessionMiddleware:
    """Puts the Django session into ``scope["session"]``; needs :class:`CookieMiddleware` above.

    If an outer session middleware already did this, this one passes straight through.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if "session" in scope:
            return await self.inner(scope, receive, send)
        if "cookies" not in scope:
            raise ValueError(
                "No cookies in scope: SessionMiddleware must be inside CookieMiddleware "
                "(use SessionMiddlewareStack or AuthMiddlewareStack)"
            )
        session = _LazySession(scope["cookies"].get(settings.SESSION_COOKIE_NAME))
        scope = dict(scope, session=session)

        async def send_saving_session(message: Message) -> None:
            if message["type"] == "http.response.start" and session.is_loaded:
                await _save_and_set_cookie(scope, session, message)
            await send(message)

        return await self.inner(scope, receive, send_saving_session)


async def _save_and_set_cookie(scope: Scope, session: Any, message: Message) -> None:
    if message.get("status", 200) == 500:
        return
    if not (session.modified or settings.SESSION_SAVE_EVERY_REQUEST):
        return
    if session.is_empty():
        if settings.SESSION_COOKIE_NAME in scope["cookies"]:
            CookieMiddleware.delete_cookie(
                message,
                settings.SESSION_COOKIE_NAME,
                path=settings.SESSION_COOKIE_PATH,
                domain=settings.SESSION_COOKIE_DOMAIN,
            )
        return
    try:
        await session.asave()
    except UpdateError:
        raise SuspiciousOperation(
            "The session was deleted before the request completed "
            "(the user may have logged out in a concurrent request)."
        ) from None
    if session.get_expire_at_browser_close():
        max_age: int | None = None
    else:
        max_age = session.get_expiry_age()
    CookieMiddleware.set_cookie(
        message,
        settings.SESSION_COOKIE_NAME,
        session.session_key,
        max_age=max_age,
        domain=settings.SESSION_COOKIE_DOMAIN,
        path=settings.SESSION_COOKIE_PATH,
        secure=bool(settings.SESSION_COOKIE_SECURE),
        httponly=bool(settings.SESSION_COOKIE_HTTPONLY),
        samesite=settings.SESSION_COOKIE_SAMESITE or None,
    )


def SessionMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """``CookieMiddleware(SessionMiddleware(inner))``."""
    return CookieMiddleware(SessionMiddleware(inner))
