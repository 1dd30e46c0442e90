"""Django settings for bench/tasks_redis.py: the Redis task backend on the bench's own server."""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = "bench-not-secret"
USE_TZ = True
DATABASES: dict[str, Any] = {}
INSTALLED_APPS = ["headrace"]
CHANNEL_LAYERS: dict[str, Any] = {}  # no progress messages: nobody watches these jobs
TASKS = {
    "default": {
        "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
        "QUEUES": ["default"],
        "OPTIONS": {
            "hosts": [os.environ.get("HEADRACE_BENCH_REDIS", "redis://127.0.0.1:6379/0")],
            "prefix": "bench-tasks",
        },
    }
}
