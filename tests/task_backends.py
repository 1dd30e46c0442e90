"""The task backends the conformance suite runs over: name -> TASKS entry for a clock.

Parts 2 and 3 add their backends here (Redis, database); the suite runs unchanged.
"""

from __future__ import annotations

import uuid
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


# -- the Redis backend (issue 14): the ``task_redis`` fixture names the server -----------------

#: The standalone redis-server of the session (set by the ``task_redis`` fixture).
REDIS_SERVER: dict[str, str] = {}


def redis(clock: ManualClock, **options: Any) -> dict[str, Any]:
    """On the session's standalone redis-server, with a fresh key prefix for each test."""
    return {
        "default": {
            "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
            "QUEUES": QUEUES,
            "OPTIONS": {
                "clock": clock,
                "hosts": [REDIS_SERVER["url"]],
                "prefix": f"t-{uuid.uuid4().hex[:12]}",
                **options,
            },
        }
    }


redis.fixtures = ("task_redis",)  # type: ignore[attr-defined]
TASK_BACKENDS["redis"] = redis
