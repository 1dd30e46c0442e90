"""Django settings for the worker processes bench/worker.py starts.

``BENCH_STACK`` picks headrace (its RedisChannelLayer and runworker) or Channels
(channels_redis and Channels' runworker); ``BENCH_REDIS_URL`` is the private redis-server.
"""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = "bench-not-secret"
USE_TZ = True
DATABASES: dict[str, Any] = {}
ASGI_APPLICATION = "bench._worker_app.application"
_stack = os.environ.get("BENCH_STACK", "headrace")
_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")

if _stack == "channels":
    INSTALLED_APPS = ["channels"]
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, the same as channels_redis'
            # blocking pop: an idle Channels worker then dies with TimeoutError. A longer
            # timeout keeps the peer alive for the comparison.
            "CONFIG": {
                "hosts": [{"address": _url, "socket_timeout": 30}],
                "capacity": 1_000_000,
                "expiry": 600,
            },
        }
    }
else:
    INSTALLED_APPS = ["headrace"]
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "headrace.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [_url], "prefix": "bench", "capacity": 1_000_000, "expiry": 600},
        }
    }

# Show both workers' start-up lines on stderr (the benchmark waits for them).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.channels": {"handlers": ["stderr"], "level": "INFO"},
        "headrace": {"handlers": ["stderr"], "level": "INFO"},
    },
}
