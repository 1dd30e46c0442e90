"""Origin checks for WebSocket handshakes (cross-site WebSocket hijacking protection).

Browsers send cookies with a WebSocket handshake whatever page opened it, so a consumer that
trusts the session must also check where the page came from. :class:`OriginValidator` admits a
handshake only when its single ``Origin`` header matches the allowlist; everything else —
a missing origin, several ``Origin`` headers, an origin that does not parse — is closed before
accept (the server answers HTTP 403) before the consumer runs, and logged once.

Allowlist entries:

* ``"*"`` — anything, including no ``Origin`` at all;
* ``"example.com"`` — that host on any scheme and port; ``".example.com"`` adds its subdomains;
* ``"https://example.com"`` / ``"https://example.com:8443"`` — that scheme, host and port
  (ports default to 80 for http/ws and 443 for https/wss); a leading dot works here too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from django.utils.http import is_same_domain

from ..types import ASGIApp, Receive, Scope, Send
from ..utils import quoted

__all__ = ["AllowedHostsOriginValidator", "OriginValidator", "WebsocketDenier"]

logger = logging.getLogger("headrace.security")

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _parse(value: str) -> SplitResult | None:
    try:
        parsed = urlsplit(value.strip().lower())
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if not parsed.scheme or not parsed.hostname:
        return None
    return parsed


def _port(parsed: SplitResult) -> int | None:
    return parsed.port if parsed.port is not None else _DEFAULT_PORTS.get(parsed.scheme)


class OriginValidator:
    """Admit a WebSocket handshake only from an allowed ``Origin``."""

    def __init__(self, application: ASGIApp, allowed_origins: Iterable[str]) -> None:
        self.application = application
        self.allowed_origins = list(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise ValueError("OriginValidator only guards WebSocket connections")
        origins = [value for name, value in scope.get("headers", ()) if name == b"origin"]
        if len(origins) > 1:
            verdict, why = False, "several Origin headers"
        elif not origins:
            verdict, why = "*" in self.allowed_origins, "no Origin header"
        else:
            origin = origins[0].decode("latin1")
            verdict, why = self.valid_origin(_parse(origin)), f"Origin {quoted(origin)} not allowed"
        if verdict:
            await self.application(scope, receive, send)
            return
        logger.warning("refused WebSocket %s: %s", quoted(scope.get("path", "?")), why)
        await WebsocketDenier(reason=why)(scope, receive, send)

    def valid_origin(self, parsed_origin: SplitResult | None) -> bool:
        """Whether a parsed origin (``None`` when absent or malformed) is allowed."""
        if "*" in self.allowed_origins:
            return True
        if parsed_origin is None:
            return False
        return any(self.match_allowed_origin(parsed_origin, p) for p in self.allowed_origins)

    def match_allowed_origin(self, parsed_origin: SplitResult, pattern: str) -> bool:
        """Whether ``parsed_origin`` matches one allowlist entry."""
        host = parsed_origin.hostname
        if host is None:
            return False
        if "://" not in pattern:
            pattern_host = urlsplit("//" + pattern.lower()).hostname or pattern.lower()
            if pattern.startswith("."):
                pattern_host = "." + pattern_host.lstrip(".")
            return is_same_domain(host, pattern_host)
        parsed_pattern = _parse(pattern.replace("://.", "://"))
        if parsed_pattern is None or parsed_pattern.hostname is None:
            return False
        pattern_host = parsed_pattern.hostname
        if "://." in pattern:
            pattern_host = "." + pattern_host
        return (
            parsed_pattern.scheme == parsed_origin.scheme
            and _port(parsed_pattern) == _port(parsed_origin)
            and is_same_domain(host, pattern_host)
        )


def AllowedHostsOriginValidator(application: ASGIApp) -> OriginValidator:
    """An :class:`OriginValidator` allowing the hosts in ``settings.ALLOWED_HOSTS``.

    With ``DEBUG`` on and ``ALLOWED_HOSTS`` empty, localhost origins are allowed, as Django
    allows localhost hosts in that case.
    """
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return OriginValidator(application, allowed)


class WebsocketDenier:
    """An application that refuses every WebSocket handshake: a close before accept (HTTP 403).

    It does not use the ``websocket.http.response`` extension to send a body: uvicorn's default
    WebSocket implementation logs "ASGI callable returned without completing handshake" at
    ERROR for every such response, which would turn each refused attacker into an error line.
    The reason is for the log line of whoever refuses (``OriginValidator`` logs it).
    """

    def __init__(self, reason: str = "Forbidden") -> None:
        self.reason = reason

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.close"})
