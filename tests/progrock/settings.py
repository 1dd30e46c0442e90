"""Settings for worker processes the tests start (``manage.py runworker`` in a subprocess).

The test suite's settings, with the ProgRock application and, when ``HEADRACE_TEST_REDIS_URL``
is set, the Redis layer at that address.
"""

import os

from tests.settings import *  # noqa: F403

ASGI_APPLICATION = "tests.progrock.asgi.application"
PROGROCK_DELAY_MS = int(os.environ.get("PROGROCK_DELAY_MS", "200"))
PROGROCK_STEP = int(os.environ.get("PROGROCK_STEP", "3"))

_redis_url = os.environ.get("HEADRACE_TEST_REDIS_URL")
if _redis_url:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "headrace.layers.redis.RedisChannelLayer",
            "CONFIG": {
                "hosts": [_redis_url],
                "prefix": os.environ.get("HEADRACE_TEST_REDIS_PREFIX", "headrace-test"),
                "channel_capacity": {"jobs": 20_000},
            },
        }
    }
