"""Django settings for the task workers bench/chaos.py's ``task-kills`` scenario starts (and
SIGKILLs): the Redis task backend on the bench's private redis-server, nothing else.

``CHAOS_REDIS_URL`` names the server, ``CHAOS_TASK_LEASE`` the lease in seconds; the bench
builds its own backend (the enqueuer's) from :func:`task_backend`, so both sides agree.
"""

from __future__ import annotations

import os
from typing import Any

#: Where the Redis task backend keeps the scenario's jobs.
PREFIX = "chaos-tasks"


def task_backend(url: str, lease: float) -> dict[str, Any]:
    """The ``TASKS`` entry of the scenario: ``max_deliveries`` is the default (3)."""
    return {
        "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"hosts": [url], "prefix": PREFIX, "lease": lease, "max_deliveries": 3},
    }


SECRET_KEY = "chaos-not-secret"
USE_TZ = True
DATABASES: dict[str, Any] = {}
INSTALLED_APPS = ["headrace"]
CHANNEL_LAYERS: dict[str, Any] = {}  # no progress messages: nobody watches these jobs
TASKS = {
    "default": task_backend(
        os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:6399/0"),
        float(os.environ.get("CHAOS_TASK_LEASE", "3")),
    )
}
