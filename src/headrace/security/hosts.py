"""``ALLOWED_HOSTS`` for consumers: WebSocket, server-sent event and HTTP consumer requests.

Django refuses an HTTP request whose ``Host`` is not in ``ALLOWED_HOSTS`` (``DisallowedHost``,
answered 400) when a view or middleware asks for the host, which the default middleware
always does. Consumers never pass through Django's request machinery, so every consumer made
with ``as_asgi()`` applies the same rule itself, before the consumer is even created:

* a WebSocket handshake with a disallowed host is closed before ``accept``, which the server
  answers with HTTP 403;
* an HTTP request to a consumer (server-sent events, :class:`AsyncHttpConsumer`) is answered
  400, as Django answers ``DisallowedHost``;
* either way one line is logged on ``headrace.security``, with the host quoted.

The host is found exactly as Django's ``HttpRequest.get_host()`` finds it: ``X-Forwarded-Host``
when ``USE_X_FORWARDED_HOST`` is on, else the ``Host`` header, else the server's own address
(``X-Forwarded-Port`` when ``USE_X_FORWARDED_PORT`` is on). With ``DEBUG = True`` and an empty
``ALLOWED_HOSTS``, the localhost variants Django allows in that case are allowed.
``ALLOWED_HOSTS = ["*"]`` switches the check off.

Why it matters for WebSockets: a page on ``evil.example`` whose DNS name is rebound to your
server's address makes the victim's browser open a WebSocket to your server with
``Host: evil.example``. Refusing unknown hosts closes that door, as it does for HTTP.
"""

from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from ..types import ASGIApp, Receive, Scope, Send
from ..utils import quoted

__all__ = ["allowed_hosts", "check_host", "host_of", "refuse_disallowed_hosts"]

logger = logging.getLogger("headrace.security")

_DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]


def allowed_hosts() -> list[str]:
    """``settings.ALLOWED_HOSTS``, or Django's localhost variants under ``DEBUG`` when empty."""
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        return list(_DEBUG_HOSTS)
    return hosts


def _header(scope: Scope, name: bytes) -> str | None:
    values = [value for key, value in scope.get("headers", ()) if key == name]
    # Django joins repeated headers with commas; a joined value never validates as a host.
    return ",".join(value.decode("latin-1") for value in values) if values else None


def host_of(scope: Scope) -> str | None:
    """The host a request asked for, found as ``HttpRequest.get_host()`` finds it (unchecked).

    ``None`` when the scope says nothing about it (no ``Host`` header and no ``server``): only
    a scope built by hand looks like that — servers always pass the address they listen on and
    HTTP/1.1 requires ``Host`` — so there is nothing to check (Django would check "unknown").
    """
    if settings.USE_X_FORWARDED_HOST:
        forwarded = _header(scope, b"x-forwarded-host")
        if forwarded is not None:
            return forwarded
    host = _header(scope, b"host")
    if host is not None:
        return host
    server = scope.get("server")
    if not server:
        return None
    name, port = str(server[0]), str(server[1])
    if settings.USE_X_FORWARDED_PORT:
        port = _header(scope, b"x-forwarded-port") or port
    secure = scope.get("scheme") in ("https", "wss")
    return name if port == ("443" if secure else "80") else f"{name}:{port}"


def check_host(scope: Scope) -> str | None:
    """``None`` when the request's host is allowed, else why not (for the log line)."""
    host = host_of(scope)
    if host is None:
        return None
    domain, _port = split_domain_port(host)
    if domain and validate_host(domain, allowed_hosts()):
        return None
    if not domain:
        return f"Host {quoted(host)} is not a valid host name"
    return f"Host {quoted(host)} is not in ALLOWED_HOSTS"


def refuse_disallowed_hosts(application: ASGIApp) -> ASGIApp:
    """Wrap ``application`` so WebSocket and HTTP requests for a disallowed host are refused.

    ``as_asgi()`` applies this to every consumer; wrap your own ASGI applications with it to
    give them the same check. Other scope types (``channel``, ``lifespan``) pass through.
    """

    @functools.wraps(application)
    async def checked(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("websocket", "http"):
            await application(scope, receive, send)
            return
        problem = check_host(scope)
        if problem is None:
            await application(scope, receive, send)
            return
        path = quoted(scope.get("path", "?"))
        if kind == "websocket":
            logger.warning("refused WebSocket %s: %s", path, problem)
            if (await receive())["type"] == "websocket.connect":
                # A close before accept: the server answers the handshake with 403. (A denial
                # response with a body makes uvicorn's default WebSocket implementation log
                # an error for every refusal; one line per refusal is ours.)
                await send({"type": "websocket.close"})
            return
        logger.warning("refused HTTP %s %s: %s", quoted(scope.get("method", "?")), path, problem)
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": b"Bad Request: host not allowed\n"})

    return checked
