"""Django authentication for consumers: ``scope["user"]``, ``login`` and ``logout``.

``AuthMiddlewareStack(inner)`` = cookies + session + user, the usual wrapping for an app whose
WebSocket consumers need to know who is connected. The user is loaded (and the session's auth
hash verified, as Django's own middleware does) before the consumer starts, so a consumer can
read ``self.scope["user"]`` from any handler without touching the database.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
    user_logged_in,
    user_logged_out,
)
from django.utils.crypto import constant_time_compare
from django.utils.functional import LazyObject

from .db import database_sync_to_async
from .middleware import BaseMiddleware
from .sessions import CookieMiddleware, SessionMiddleware
from .types import ASGIApp, Receive, Scope, Send

__all__ = [
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "UserLazyObject",
    "get_user",
    "login",
    "logout",
]


def _session_of(scope: Scope, what: str) -> Any:
    try:
        return scope["session"]
    except KeyError:
        raise ValueError(
            f"{what} needs scope['session']: wrap the application in SessionMiddleware "
            "(or AuthMiddlewareStack)"
        ) from None


def _load_user(scope: Scope) -> Any:
    from django.contrib.auth.models import AnonymousUser

    session = _session_of(scope, "get_user()")
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    user = load_backend(backend_path).get_user(user_id)
    if user is None:
        return AnonymousUser()
    if hasattr(user, "get_session_auth_hash"):
        stored = session.get(HASH_SESSION_KEY)
        if not (stored and constant_time_compare(stored, user.get_session_auth_hash())):
            # The password changed since this session logged in: the session is void.
            session.flush()
            return AnonymousUser()
    return user


#: ``await get_user(scope)``: the user the scope's session belongs to, or ``AnonymousUser``.
get_user = database_sync_to_async(_load_user)


def _login(scope: Scope, user: Any, backend: str | None = None) -> None:
    session = _session_of(scope, "login()")
    if user is None:
        user = scope.get("user")
    if user is None:
        raise ValueError("login() needs a user, as an argument or in scope['user']")
    auth_hash = user.get_session_auth_hash() if hasattr(user, "get_session_auth_hash") else ""
    if SESSION_KEY in session:
        same_user = str(session[SESSION_KEY]) == user._meta.pk.value_to_string(user)
        if not same_user or (
            auth_hash and not constant_time_compare(session.get(HASH_SESSION_KEY, ""), auth_hash)
        ):
            # Never reuse a session that belonged to someone else.
            session.flush()
    else:
        session.cycle_key()
    if backend is None:
        backend = getattr(user, "backend", None)
    if backend is None:
        backends = settings.AUTHENTICATION_BACKENDS
        if len(backends) != 1:
            raise ValueError(
                "Several authentication backends are configured: pass backend= to login() "
                "or set user.backend"
            )
        backend = backends[0]
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = backend
    session[HASH_SESSION_KEY] = auth_hash
    scope["user"] = user
    user_logged_in.send(sender=user.__class__, request=None, user=user)


#: ``await login(scope, user, backend=None)``: log ``user`` into the scope's session.
#: Save the session afterwards (``await scope["session"].asave()``) to keep it.
login = database_sync_to_async(_login)


def _logout(scope: Scope) -> None:
    from django.contrib.auth.models import AnonymousUser

    session = _session_of(scope, "logout()")
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        user_logged_out.send(sender=user.__class__, request=None, user=user)
    session.flush()
    if "user" in scope:
        scope["user"] = AnonymousUser()


#: ``await logout(scope)``: flush the session and make ``scope["user"]`` anonymous.
logout = database_sync_to_async(_logout)


class UserLazyObject(LazyObject):  # type: ignore[type-arg]
    """Stands in for the user until it is loaded; reading it early is a clear error."""

    def _setup(self) -> None:
        raise ValueError("scope['user'] was read before AuthMiddleware loaded it")


class AuthMiddleware(BaseMiddleware):
    """Loads ``scope["user"]`` from the session; needs :class:`SessionMiddleware` above."""

    def populate_scope(self, scope: Scope) -> None:
        if "session" not in scope:
            raise ValueError(
                "AuthMiddleware cannot find scope['session']: SessionMiddleware must wrap it"
            )
        if "user" not in scope:
            scope["user"] = UserLazyObject()

    async def resolve_scope(self, scope: Scope) -> None:
        scope["user"]._wrapped = await get_user(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        scope = dict(scope)
        self.populate_scope(scope)
        await self.resolve_scope(scope)
        return await self.inner(scope, receive, send)


def AuthMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """``CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))``."""
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))
