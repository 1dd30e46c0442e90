"""Security middleware; see :mod:`headrace.security.websocket` for origin checks."""

from __future__ import annotations

__all__: list[str] = []
