"""Django database connections around consumer handlers.

Django closes a request's database connection when the request ends (or when it is older than
``CONN_MAX_AGE``). A consumer may live for hours, so headrace does the same around each handler:
``database_sync_to_async`` closes old connections before and after the wrapped call, exactly as
Channels users expect.

Tests run inside one transaction on one connection; closing it would end the test. The testing
communicators therefore run applications with :func:`connection_cleanup_suspended` in effect.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Final, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync, sync_to_async
from django.db import close_old_connections

__all__ = [
    "CLEANUP_INTERVAL",
    "DatabaseSyncToAsync",
    "aclose_old_connections",
    "close_old_connections_unless_suspended",
    "connection_cleanup_suspended",
    "database_sync_to_async",
    "suspend_connection_cleanup",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_suspended: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "headrace_db_cleanup_suspended", default=False
)


@contextmanager
def connection_cleanup_suspended() -> Iterator[None]:
    """Within this context (and tasks and threads started from it) old connections stay open."""
    token = _suspended.set(True)
    try:
        yield
    finally:
        _suspended.reset(token)


def suspend_connection_cleanup() -> None:
    """Suspend cleanup for the rest of the current context (used by the test communicators)."""
    _suspended.set(True)


def close_old_connections_unless_suspended() -> None:
    """Close unusable or expired connections, unless a test suspended that."""
    if not _suspended.get():
        close_old_connections()


class DatabaseSyncToAsync(SyncToAsync[_P, _R]):
    """``sync_to_async`` that closes old database connections before and after the call.

    The cleanup runs on the call's thread *inside* the caller's context (which asgiref enters
    only around the function itself), so :func:`connection_cleanup_suspended` reaches it.
    """

    def __init__(
        self,
        func: Callable[_P, _R],
        thread_sensitive: bool = True,
        executor: ThreadPoolExecutor | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        super().__init__(
            func, thread_sensitive=thread_sensitive, executor=executor, context=context
        )
        self.func = _closing_old_connections(func)


def _closing_old_connections(func: Callable[_P, _R]) -> Callable[_P, _R]:  # noqa: UP047
    @functools.wraps(func)
    def closing(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        close_old_connections_unless_suspended()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections_unless_suspended()

    return closing


def database_sync_to_async(  # noqa: UP047 - one style with the class above
    func: Callable[_P, _R], *, thread_sensitive: bool = True
) -> Callable[_P, Any]:
    """Run ``func`` in a thread like ``sync_to_async``, with connection cleanup around it.

    Usable as a decorator (``@database_sync_to_async``) or a call, like Channels' helper.
    """
    return DatabaseSyncToAsync(func, thread_sensitive=thread_sensitive)


#: An async consumer hops to the ORM's thread to close old connections at most this often.
CLEANUP_INTERVAL: Final = 1.0
_last_cleanup = -CLEANUP_INTERVAL


async def aclose_old_connections() -> None:
    """``close_old_connections`` from async code, on the thread Django's ORM uses.

    The hop to that thread is shared by every handler of the process, so it happens at most
    once per :data:`CLEANUP_INTERVAL` seconds: connections past ``CONN_MAX_AGE`` or broken are
    still closed promptly, and a busy worker or consumer does not queue behind the hop.
    """
    global _last_cleanup
    if _suspended.get():
        return
    now = time.monotonic()
    if now - _last_cleanup < CLEANUP_INTERVAL:
        return
    _last_cleanup = now
    await sync_to_async(close_old_connections)()
