"""Settings for the worker processes the Redis task tests start (``HEADRACE_TEST_*`` env)."""

import os

from tests.settings import *  # noqa: F403

TASKS = {
    "default": {
        "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {
            "hosts": [os.environ["HEADRACE_TEST_REDIS"]],
            "prefix": os.environ["HEADRACE_TEST_PREFIX"],
            "lease": float(os.environ.get("HEADRACE_TEST_LEASE", "1")),
            "heartbeat_interval": float(os.environ.get("HEADRACE_TEST_HEARTBEAT", "0.2")),
            "max_deliveries": int(os.environ.get("HEADRACE_TEST_MAX_DELIVERIES", "3")),
        },
    }
}
