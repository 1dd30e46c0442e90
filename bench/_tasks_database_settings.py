"""Django settings for bench/tasks_database.py and the worker processes it starts
(``BENCH_PG_*``: the private PostgreSQL server the bench started)."""

from __future__ import annotations

import os

SECRET_KEY = "bench-not-secret"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "headrace"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("BENCH_PG_NAME", "bench_headrace"),
        "USER": "headrace",
        "HOST": os.environ.get("BENCH_PG_HOST", ""),
        "PORT": os.environ.get("BENCH_PG_PORT", ""),
    }
}
TASKS = {
    "default": {
        "BACKEND": "headrace.tasks.backends.database.DatabaseTaskBackend",
        "QUEUES": ["default"],
    }
}
