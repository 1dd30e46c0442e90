"""Small helpers shared by consumers: handler names, log quoting, the sync handler pool."""

from __future__ import annotations

import threading
import types
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .settings import limits

__all__ = ["get_handler_name", "name_that_thing", "quoted", "sync_handler_pool"]

#: Characters of a client-controlled value :func:`quoted` keeps in a log line.
_QUOTED_LIMIT = 200

_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quoted(value: object, *, limit: int = _QUOTED_LIMIT) -> str:
    """``value`` as one double-quoted, escaped token, safe to put in a log line.

    Every value a client controls (a path, a header, an origin, a close reason, a channel name
    it chose) goes through this before it reaches a log message: control characters, line
    separators, bidi overrides and other non-printable characters become ``\\n``, ``\\x1b``,
    ``\\u202e`` and so on; and ``"`` and ``\\`` are escaped, so a value can neither end the line and
    forge the next one nor hide what it is. Bytes are shown byte for byte (Latin-1). Values
    longer than ``limit`` characters are cut, marked with ``...`` after the closing quote.
    """
    text = value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    if not text.isprintable() or '"' in text or "\\" in text:
        text = "".join(_escape(char) for char in text)
    return f'"{text}"...' if cut else f'"{text}"'


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


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
