"""System checks (``manage.py check``) for mistakes that would otherwise fail quietly or late.

``runserver`` runs them before it serves, so these mistakes stop it at start-up rather than
failing the first request:

- ``headrace.E001``: a ``CHANNEL_LAYERS`` entry that cannot give a layer (not a dict, no
  ``BACKEND``, a ``BACKEND`` that cannot be imported or is not a class);
- ``headrace.E002``: a bad value or unknown key in an alias's ``CONFIG`` or ``TEST_CONFIG``,
  one error per mistake, each naming the alias and the key;
- ``headrace.E003``: a ``BACKEND`` whose extra is not installed (the Redis layer without
  ``headrace[redis]``); the error says what to install;
- ``headrace.W001``: ``headrace`` listed after ``django.contrib.staticfiles``.

The channel layer checks build each alias's configuration as the registry would, and connect
to nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

__all__ = [
    "check_channel_layers",
    "check_runserver_order",
    "check_websocket_origins",
    "websocket_routes",
]


@register()
def check_channel_layers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Build every ``CHANNEL_LAYERS`` alias's configuration; an error for each mistake."""
    from headrace.exceptions import ConfigurationError
    from headrace.layers.registry import channel_layers, missing_extra

    try:
        aliases = list(channel_layers.configs)
    except ConfigurationError as error:
        return [Error(str(error), id="headrace.E001")]
    found: list[CheckMessage] = []
    for alias in aliases:
        try:
            channel_layers.backend_class(alias)
        except ConfigurationError as error:
            cause = error.__cause__
            extra = missing_extra(cause) if isinstance(cause, ImportError) else None
            found.append(
                Error(
                    str(error),
                    hint=None if extra is None else f"pip install 'headrace[{extra}]'",
                    id="headrace.E001" if extra is None else "headrace.E003",
                )
            )
            continue
        for config_key in ("CONFIG", "TEST_CONFIG"):
            if config_key == "TEST_CONFIG" and "TEST_CONFIG" not in channel_layers.configs[alias]:
                continue
            try:
                channel_layers.configuration(alias, config_key)
            except ConfigurationError as error:
                found.extend(Error(problem, id="headrace.E002") for problem in error.problems)
    return found


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
