"""Who hears about a consumer handler that raised: the server's log, or the test driving it.

A consumer contains its handlers' failures by default: it logs the exception once, answers the
client (WebSocket close 1011, HTTP 500, or a refused handshake) and ends only that connection,
so a server such as ``uvicorn mysite.asgi:application`` never logs a second copy and keeps
serving everyone else.

A test wants the opposite: the exception itself, raised where the test is waiting, as Channels'
communicators give it. So a consumer *hands the exception over* — it stops at once, sends
nothing more, logs nothing, and raises the exception out of the application — when the
connection is driven by a test harness, which it recognises by either of:

- the scope extension ``"headrace.raise_errors"`` (``scope["extensions"]``, as ASGI servers
  advertise their extensions). headrace's communicators set it unless given
  ``raise_errors=False``; any other harness may set it too;
- ``receive`` and ``send`` being an :class:`asyncio.Queue`'s own ``get`` and ``put`` methods,
  which is how asgiref's ``ApplicationCommunicator`` (and so Channels' communicators) run an
  application. No server passes bare queue methods for both.

Protocol answers that are not failures — a WebSocket frame refused with 1003, 1007 or 1009 —
are sent as usual either way.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from .types import Receive, Scope, Send

__all__ = ["RAISE_ERRORS_EXTENSION", "errors_reach_caller", "raising_errors"]

#: The scope extension asking consumers to raise their handlers' exceptions to the caller.
RAISE_ERRORS_EXTENSION: Final = "headrace.raise_errors"


def _bound_to_queue(method: Any, function: Any) -> bool:
    return isinstance(getattr(method, "__self__", None), asyncio.Queue) and (
        getattr(method, "__func__", None) is function
    )


def errors_reach_caller(scope: Scope, receive: Receive, send: Send) -> bool:
    """Whether a handler's exception should be raised to whoever runs the application."""
    extensions = scope.get("extensions") or {}
    if RAISE_ERRORS_EXTENSION in extensions:
        return True
    return _bound_to_queue(receive, asyncio.Queue.get) and _bound_to_queue(send, asyncio.Queue.put)


def raising_errors(scope: Scope) -> Scope:
    """A copy of ``scope`` with the :data:`RAISE_ERRORS_EXTENSION` extension added."""
    extensions = dict(scope.get("extensions") or {})
    extensions[RAISE_ERRORS_EXTENSION] = {}
    return {**scope, "extensions": extensions}
