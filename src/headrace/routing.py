"""Routers: pick the application for a connection by protocol, URL path or channel name.

Every router is itself an ASGI application, so they nest. URL matching uses Django's own
``path()`` and ``re_path()`` patterns. Unlike Channels, a path no route matches is answered
(HTTP 404, or a refused WebSocket handshake) and logged, not raised as an exception from the
server's point of view. Like Channels' routers, each returns whatever the application it
picked returns.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RegexPattern, RoutePattern, URLPattern, URLResolver

from .exceptions import ConfigurationError
from .types import ASGIApp, Receive, Scope, Send

__all__ = [
    "ChannelNameRouter",
    "ProtocolTypeRouter",
    "URLRouter",
    "get_default_application",
]

logger = logging.getLogger("headrace.routing")


def get_default_application() -> ASGIApp:
    """The application named by the ``ASGI_APPLICATION`` setting (``"module.attribute"``)."""
    dotted = getattr(settings, "ASGI_APPLICATION", None)
    if not isinstance(dotted, str) or "." not in dotted:
        raise ConfigurationError(
            "Set ASGI_APPLICATION to the dotted path of your application, "
            "for example 'mysite.asgi.application'."
        )
    module_path, name = dotted.rsplit(".", 1)
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise ConfigurationError(
            f"Cannot import ASGI_APPLICATION module {module_path!r}: {exc}"
        ) from exc
    try:
        application: ASGIApp = getattr(module, name)
    except AttributeError:
        raise ConfigurationError(
            f"ASGI_APPLICATION module {module_path!r} has no attribute {name!r}"
        ) from None
    return application


class ProtocolTypeRouter:
    """Route on ``scope["type"]``: ``{"http": ..., "websocket": ..., "channel": ...}``."""

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        self.application_mapping = dict(application_mapping)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        try:
            application = self.application_mapping[scope["type"]]
        except KeyError:
            raise ValueError(
                f"No application configured for scope type {scope['type']!r} "
                f"(configured: {', '.join(sorted(self.application_mapping)) or 'none'})"
            ) from None
        return await application(scope, receive, send)


async def _not_found(scope: Scope, receive: Receive, send: Send, path: str) -> None:
    logger.warning("no route for %s path %r", scope["type"], path)
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": "no route"})
    elif scope["type"] == "http":
        body = f"No route found for path {path!r}.".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": body})
    else:
        raise ValueError(f"No route found for path {path!r}.")


class URLRouter:
    """Route on the URL path with Django ``path()`` / ``re_path()`` entries.

    Captured arguments land in ``scope["url_route"]`` (``{"args": ..., "kwargs": ...}``),
    merged with those of outer routers. Nest a ``URLRouter`` as a route's view to match a
    prefix and route the rest; ``include()`` is refused. The outermost router strips
    ``scope["root_path"]`` first.
    """

    #: Marks this application as doing its own routing, so an outer route only matches a prefix.
    _path_routing = True

    def __init__(self, routes: Sequence[URLPattern | URLResolver]) -> None:
        self.routes = list(routes)
        for route in self.routes:
            if isinstance(route, URLResolver) and not getattr(route, "callback", None):
                raise ConfigurationError(
                    f"{route}: include() is not supported in URLRouter; "
                    "nest a URLRouter as the route's application instead."
                )
            if getattr(route.callback, "_path_routing", False):
                route.pattern = _as_prefix(route.pattern)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        outermost = "path_remaining" not in scope
        path = scope.get("path_remaining", scope.get("path"))
        if path is None:
            raise ValueError("URLRouter needs a 'path' in the scope (HTTP or WebSocket only)")
        if outermost:
            root_path = scope.get("root_path", "")
            if root_path and path.startswith(root_path):
                path = path[len(root_path) :]
            elif root_path:
                await _not_found(scope, receive, send, path)
                return
        relative = path.lstrip("/")
        for route in self.routes:
            try:
                match = route.pattern.match(relative)
            except Resolver404:
                continue
            if not match:
                continue
            remaining, args, kwargs = match
            defaults: dict[str, Any] = getattr(route, "default_args", {})
            application: ASGIApp = route.callback  # type: ignore[assignment]
            outer = scope.get("url_route", {})
            inner_scope = dict(
                scope,
                path_remaining=remaining,
                url_route={
                    "args": tuple(outer.get("args", ())) + tuple(args),
                    "kwargs": {**outer.get("kwargs", {}), **kwargs, **defaults},
                },
            )
            try:
                return await application(inner_scope, receive, send)
            except Resolver404:
                if not getattr(application, "_path_routing", False):
                    raise
                continue  # a nested router matched the prefix but not the rest
        if not outermost:
            raise Resolver404({"path": relative})
        await _not_found(scope, receive, send, path)


def _as_prefix(pattern: Any) -> Any:
    if isinstance(pattern, RegexPattern):
        return RegexPattern(vars(pattern)["_regex"], pattern.name, is_endpoint=False)
    if isinstance(pattern, RoutePattern):
        return RoutePattern(vars(pattern)["_route"], pattern.name, is_endpoint=False)
    raise ConfigurationError(f"Unsupported URL pattern type: {type(pattern).__name__}")


class ChannelNameRouter:
    """Route background-channel scopes (``scope["channel"]``) for workers."""

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        self.application_mapping = dict(application_mapping)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if "channel" not in scope:
            raise ValueError(
                "ChannelNameRouter got a scope without a 'channel' key; use it only for "
                "'channel' scopes (runworker)"
            )
        try:
            application = self.application_mapping[scope["channel"]]
        except KeyError:
            raise ValueError(
                f"No application configured for channel {scope['channel']!r}"
            ) from None
        return await application(scope, receive, send)
