"""The task backends the conformance suite runs over: name -> TASKS entry for a clock.

Parts 2 and 3 add their backends here (Redis, database); the suite runs unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from headrace.layers import ManualClock

QUEUES = ["default", "emails"]


def memory(clock: ManualClock, *, request: Any = None, **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
            "QUEUES": QUEUES,
            "OPTIONS": {"clock": clock, **options},
        }
    }


def redis(clock: ManualClock, *, request: Any, **options: Any) -> dict[str, Any]:
    """On the session's standalone redis-server; a fresh key prefix per test."""
    from tests.redis_servers import servers

    server = servers(request.config).standalone()
    return {
        "default": {
            "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
            "QUEUES": QUEUES,
            "OPTIONS": {
                "clock": clock,
                "hosts": [server.url],
                "prefix": f"t-{uuid.uuid4().hex[:12]}",
                **options,
            },
        }
    }


TASK_BACKENDS: dict[str, Callable[..., dict[str, Any]]] = {"memory": memory, "redis": redis}
