"""System checks (``manage.py check``) for mistakes that would otherwise fail quietly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register

__all__ = ["check_runserver_order", "check_websocket_origins", "websocket_routes"]


@register()
def check_runserver_order(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``headrace`` must come before ``django.contrib.staticfiles`` for its ``runserver``."""
    apps = list(settings.INSTALLED_APPS)
    if "headrace" not in apps or "django.contrib.staticfiles" not in apps:
        return []
    if apps.index("headrace") < apps.index("django.contrib.staticfiles"):
        return []
    return [
        Warning(
            "'headrace' comes after 'django.contrib.staticfiles' in INSTALLED_APPS, so "
            "`manage.py runserver` is Django's and does not serve WebSockets.",
            hint="Move 'headrace' above 'django.contrib.staticfiles'.",
            id="headrace.W001",
        )
    ]


def websocket_routes(application: Any) -> list[tuple[str, bool]]:
    """Every WebSocket route of ``application``, with whether an origin validator guards it.

    Walks a :class:`~headrace.routing.ProtocolTypeRouter`'s ``"websocket"`` entry down through
    middleware (anything with ``inner`` or ``application``), nested
    :class:`~headrace.routing.URLRouter` routes and wrapped functions, to the applications
    that serve connections. A route counts as guarded when an
    :class:`~headrace.security.websocket.OriginValidator` that does not allow ``"*"`` sits
    above it. Returns ``(route, guarded)`` pairs; ``route`` is the joined URL patterns.
    """
    mapping = getattr(application, "application_mapping", None)
    if isinstance(mapping, dict):
        if "websocket" not in mapping:
            return []
        application = mapping["websocket"]
    return list(_walk(application, "", guarded=False, seen=set()))


def _walk(app: Any, route: str, *, guarded: bool, seen: set[int]) -> Iterator[tuple[str, bool]]:
    from .security.websocket import OriginValidator

    if id(app) in seen or len(seen) > 1000:  # a cycle, or a structure too odd to follow
        yield route or "/", guarded
        return
    seen = seen | {id(app)}
    if isinstance(app, OriginValidator):
        guarded = guarded or "*" not in app.allowed_origins
        yield from _walk(app.application, route, guarded=guarded, seen=seen)
        return
    routes = getattr(app, "routes", None)
    if isinstance(routes, list) and getattr(app, "_path_routing", False):
        for entry in routes:
            pattern = str(getattr(entry, "pattern", "?"))
            yield from _walk(entry.callback, route + pattern, guarded=guarded, seen=seen)
        return
    if getattr(app, "consumer_class", None) is not None:
        yield route or "/", guarded
        return
    for attribute in ("inner", "application", "app", "__wrapped__"):
        inner = getattr(app, attribute, None)
        if inner is not None and callable(inner):
            yield from _walk(inner, route, guarded=guarded, seen=seen)
            return
    yield route or "/", guarded


@register(Tags.security)
def check_websocket_origins(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """With ``DEBUG`` off, warn about WebSocket routes no origin validator guards.

    Browsers send cookies with a WebSocket handshake whatever site opened it, so an unguarded
    route that trusts the session can be driven by any page the user visits (cross-site
    WebSocket hijacking).
    """
    if settings.DEBUG:
        return []
    dotted = getattr(settings, "ASGI_APPLICATION", None)
    if not isinstance(dotted, str):
        return []
    from .routing import get_default_application

    try:
        application = get_default_application()
    except Exception:  # the server reports a broken ASGI_APPLICATION when it starts
        return []
    return [
        Warning(
            f"WebSocket route {route!r} of {dotted} is not guarded by an origin validator, "
            "so any web page a visitor opens can connect to it with the visitor's cookies.",
            hint="Wrap the WebSocket application in AllowedHostsOriginValidator (or "
            "OriginValidator with a list of origins) from headrace.security.websocket.",
            obj=route,
            id="headrace.W002",
        )
        for route, guarded in websocket_routes(application)
        if not guarded
    ]
