"""Settings of the worker processes the database kill test starts (and SIGKILLs): the test
suite's, with ``default`` on the test's PostgreSQL server and short leases."""

import os

from tests.settings import *  # noqa: F403

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
        "QUEUES": ["default"],
        "OPTIONS": {"lease": 1.0, "max_deliveries": 20},
    }
}
