"""headrace's own settings, their defaults, and why those defaults.

Every setting is optional and read from Django's settings with a ``HEADRACE_`` prefix. Values
are read once and cached; ``override_settings`` in tests clears the cache.

========================================  ==========  =============================================
Setting                                   Default     Meaning
========================================  ==========  =============================================
``HEADRACE_WEBSOCKET_MAX_MESSAGE_SIZE``   1 MiB       Largest incoming WebSocket message; larger
                                                      closes the connection with 1009.
``HEADRACE_WEBSOCKET_OUTBOX_SIZE``        256         Frames a connection may have waiting for a
                                                      slow client before the policy below applies.
``HEADRACE_WEBSOCKET_SLOW_CLIENT``        "close"     ``"close"`` (close with 1013) or
                                                      ``"drop-oldest"`` (discard the oldest frame).
``HEADRACE_WEBSOCKET_HANDSHAKE_TIMEOUT``  10.0 s      Time a ``connect`` handler has to accept or
                                                      deny before the connection is refused.
``HEADRACE_WEBSOCKET_SEND_TIMEOUT``       5.0 s       Time the server may go without taking a
                                                      frame (the client reads nothing) before the
                                                      connection is closed with 1013, then
                                                      aborted if even the close cannot be written;
                                                      ``None`` waits forever.
``HEADRACE_WEBSOCKET_PING_INTERVAL``      20.0 s      Server pings; ``None`` turns pings off.
``HEADRACE_WEBSOCKET_PING_TIMEOUT``       20.0 s      A pong must arrive within this.
``HEADRACE_SYNC_THREADS``                 min(32,     Threads running sync consumer handlers
                                          CPUs + 4)   (per connection, handlers stay in order).
========================================  ==========  =============================================

1 MiB is far above any chat or dashboard frame yet small enough that a hostile client cannot
make the server buffer much; 256 frames lets a briefly stalled client catch up while a client
that stopped reading is cut off before it costs real memory. Five seconds without the server
taking a single frame is far longer than any stall of a client that is still reading, and short
enough that a client that stopped reading does not hold its socket and consumer for long.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Literal

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .exceptions import ConfigurationError

__all__ = ["Limits", "SlowClientPolicy", "limits"]

SlowClientPolicy = Literal["close", "drop-oldest"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The safe limits in force; build one with :func:`limits` or ``Limits().using(...)``."""

    websocket_max_message_size: int = 1024 * 1024
    websocket_outbox_size: int = 256
    websocket_slow_client: SlowClientPolicy = "close"
    websocket_handshake_timeout: float = 10.0
    websocket_send_timeout: float | None = 5.0
    websocket_ping_interval: float | None = 20.0
    websocket_ping_timeout: float | None = 20.0
    sync_threads: int = min(32, (os.cpu_count() or 1) + 4)

    def __post_init__(self) -> None:
        if self.websocket_max_message_size < 1:
            raise ConfigurationError("HEADRACE_WEBSOCKET_MAX_MESSAGE_SIZE must be at least 1")
        if self.websocket_outbox_size < 1:
            raise ConfigurationError("HEADRACE_WEBSOCKET_OUTBOX_SIZE must be at least 1")
        if self.websocket_slow_client not in ("close", "drop-oldest"):
            raise ConfigurationError(
                "HEADRACE_WEBSOCKET_SLOW_CLIENT must be 'close' or 'drop-oldest', "
                f"got {self.websocket_slow_client!r}"
            )
        if self.websocket_handshake_timeout <= 0:
            raise ConfigurationError("HEADRACE_WEBSOCKET_HANDSHAKE_TIMEOUT must be positive")
        if self.websocket_send_timeout is not None and not self.websocket_send_timeout > 0:
            raise ConfigurationError(
                "HEADRACE_WEBSOCKET_SEND_TIMEOUT must be positive or None, "
                f"got {self.websocket_send_timeout!r}"
            )
        if self.sync_threads < 1:
            raise ConfigurationError("HEADRACE_SYNC_THREADS must be at least 1")

    def using(self, **changes: Any) -> Limits:
        """Return a copy with ``changes`` applied (validated like the original)."""
        return replace(self, **changes)


@cache
def limits() -> Limits:
    """The limits configured in Django settings (cached until a setting changes)."""
    found: dict[str, Any] = {}
    for field in Limits.__dataclass_fields__:
        name = "HEADRACE_" + field.upper()
        if hasattr(django_settings, name):
            found[field] = getattr(django_settings, name)
    return Limits(**found)


@receiver(setting_changed)
def _forget_limits(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("HEADRACE_"):
        limits.cache_clear()
