"""Small helpers shared by consumers: handler names and the sync handler thread pool."""

from __future__ import annotations

import threading
import types
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .settings import limits

__all__ = ["get_handler_name", "name_that_thing", "sync_handler_pool"]


def get_handler_name(message: Mapping[str, Any]) -> str:
    """``"chat.message"`` -> ``"chat_message"``; a missing or private type is a ``ValueError``."""
    try:
        kind = message["type"]
    except KeyError:
        raise ValueError("Incoming message has no 'type' key") from None
    if not isinstance(kind, str):
        raise ValueError(f"Incoming message 'type' must be a str, got {type(kind).__name__}")
    name = kind.replace(".", "_")
    if not name or name.startswith("_"):
        raise ValueError(f"Malformed message type {kind!r} (empty or leading underscore)")
    return name


def name_that_thing(thing: Any) -> str:
    """A dotted name for a function, class or instance, for log lines and errors."""
    is_named = isinstance(
        thing, type | types.FunctionType | types.MethodType | types.BuiltinFunctionType
    )
    target = thing if is_named else type(thing)
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if qualname is None:
        return repr(thing)
    return f"{module}.{qualname}" if module else str(qualname)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def sync_handler_pool() -> ThreadPoolExecutor:
    """The bounded pool that runs sync consumer handlers (``HEADRACE_SYNC_THREADS`` threads).

    Each connection still runs its handlers one at a time and in order: a consumer awaits one
    handler before dispatching the next, so ordering is per connection while different
    connections use different threads.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=limits().sync_threads, thread_name_prefix="headrace-sync"
            )
        return _pool
