"""Durable tasks in the project's own database.

:mod:`.backend` (the backend: what it guarantees and how), :mod:`.sql` (every statement, and
the table layout with its indexes), :mod:`.models` (the tables), :mod:`.store` (what a
process shares: leases held, waiting workers, the LISTEN thread), :mod:`.connections` and
:mod:`.rows` (connections, and rows as jobs).

The backend is imported lazily: the ``headrace`` app's models module imports :mod:`.models`
while Django is still loading apps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headrace.tasks.backends.database.backend import (
        DatabaseTaskBackend,
        DatabaseTaskStatistics,
    )

__all__ = ["DatabaseTaskBackend", "DatabaseTaskStatistics"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from headrace.tasks.backends.database import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
