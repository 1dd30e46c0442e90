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
