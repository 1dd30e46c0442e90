"""Task backends: ``memory`` now (Redis and the database in later parts)."""

from __future__ import annotations

__all__: list[str] = []
