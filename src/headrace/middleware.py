"""The base for ASGI middleware that adds to the scope before calling the inner application."""

from __future__ import annotations

from typing import Any

from .types import ASGIApp, Receive, Scope, Send

__all__ = ["BaseMiddleware"]


class BaseMiddleware:
    """Wraps ``inner``; each call gets its own copy of the scope so changes never leak outward.

    One instance serves every connection: keep per-connection state in the scope, not on
    ``self``. Returns whatever ``inner`` returns, as Channels' middleware does.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        return await self.inner(dict(scope), receive, send)
