"""Django settings for the processes bench/chaos.py starts: the test project on Redis.

The test suite's project (``tests.settings``: its chat app, origin check and sessions) with
the channel layer on the bench's private redis-server (``CHAOS_REDIS_URL``) and the chaos
worker channel routed beside it (``bench._chaos_app``).
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403

ASGI_APPLICATION = "bench._chaos_app.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "headrace.layers.redis.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:6399/0")],
            "prefix": "chaos",
            "capacity": 10_000,
        },
    }
}
