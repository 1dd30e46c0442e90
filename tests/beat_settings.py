"""Settings for the scheduler processes the tests start (``runbeat``, ``runworker --beat``):
the test suite's settings with a one-second schedule entry. With ``HEADRACE_PG_NAME`` set,
``default`` is that PostgreSQL database and the tasks use the database backend."""

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
    # A scheduler that wakes late (a loaded machine) still fires every slot.
    HEADRACE_TASKS_SCHEDULE["second"]["catch_up"] = "all"
