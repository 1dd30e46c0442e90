"""The task backends the conformance suite runs over: name -> TASKS entry for a clock.

Parts 2 and 3 add their backends here (Redis, database); the suite runs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headrace.layers import ManualClock

QUEUES = ["default", "emails"]


def memory(clock: ManualClock, **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
            "QUEUES": QUEUES,
            "OPTIONS": {"clock": clock, **options},
        }
    }


TASK_BACKENDS: dict[str, Callable[..., dict[str, Any]]] = {"memory": memory}


# -- the database backend (issue 15): the fixtures named in ``fixtures`` give it empty tables --

POSTGRES_ALIAS = "headrace_pg"
SQLITE_ALIAS = "headrace_sqlite"


def _database(database: str) -> Callable[..., dict[str, Any]]:
    def make(clock: ManualClock, **options: Any) -> dict[str, Any]:
        return {
            "default": {
                "BACKEND": "headrace.tasks.backends.database.DatabaseTaskBackend",
                "QUEUES": QUEUES,
                "OPTIONS": {"clock": clock, "database": database, **options},
            }
        }

    return make


sqlite = _database(SQLITE_ALIAS)
sqlite.fixtures = ("task_sqlite",)  # type: ignore[attr-defined]
postgres = _database(POSTGRES_ALIAS)
postgres.fixtures = ("task_postgres",)  # type: ignore[attr-defined]

TASK_BACKENDS.update(sqlite=sqlite, postgres=postgres)
