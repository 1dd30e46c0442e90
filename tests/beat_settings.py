"""Settings for the scheduler processes the tests start (``runbeat``, ``runworker --beat``):
the test suite's settings with a one-second schedule entry. With ``HEADRACE_PG_NAME`` set,
``default`` is that PostgreSQL database and the tasks use the database backend; with
``HEADRACE_TEST_REDIS`` set, the tasks use the Redis backend on that server, under
``HEADRACE_TEST_PREFIX``."""

import os

from tests.settings import *  # noqa: F403

TIME_ZONE = "UTC"
HEADRACE_TASKS_SCHEDULE = {
    "second": {"task": "tests.taskapp.periodic.tick", "schedule": 1, "args": ["process"]},
}

if os.environ.get("HEADRACE_PG_NAME"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["HEADRACE_PG_NAME"],
            "USER": "headrace",
            "HOST": os.environ["HEADRACE_PG_HOST"],
            "PORT": os.environ["HEADRACE_PG_PORT"],
        }
    }
    TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.database.DatabaseTaskBackend",
            "QUEUES": ["default", "emails"],
        }
    }
elif os.environ.get("HEADRACE_TEST_REDIS"):
    TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {
                "hosts": [os.environ["HEADRACE_TEST_REDIS"]],
                "prefix": os.environ["HEADRACE_TEST_PREFIX"],
            },
        }
    }

if os.environ.get("HEADRACE_PG_NAME") or os.environ.get("HEADRACE_TEST_REDIS"):
    # A scheduler that wakes late (a loaded machine) still fires every slot.
    HEADRACE_TASKS_SCHEDULE["second"]["catch_up"] = "all"
