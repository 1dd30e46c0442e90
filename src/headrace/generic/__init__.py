"""Generic consumers: ``websocket`` (plain and JSON, async and sync), ``http``, ``sse``.

Import from the submodules, as with Channels (``headrace.generic.websocket``).
"""

from __future__ import annotations

__all__: list[str] = []
