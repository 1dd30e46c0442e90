"""Settings for the headrace demo: three live pages on one Django project.

Environment variables (all optional):

``REDIS_URL``
    ``redis://host:port/db``: use the Redis channel layer; ``make demo`` then starts a separate
    ``runworker`` process. Unset: the in-memory layer, workers inside ``runserver``.
``DEMO_DB``
    The SQLite file (default ``demo/db.sqlite3``, ignored by git).
``DEMO_STEP_SECONDS``
    Seconds between two progress steps of a ProgRock job (default 0.2, as in the article).
``DEMO_SECRET_KEY``
    The secret key; the default is fine for a demo on 127.0.0.1 and nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DEMO_SECRET_KEY", "headrace-demo-only-never-deploy-this-key")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "demo_site",
    "headrace",  # before staticfiles: its runserver serves HTTP and WebSocket through uvicorn
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "chat",
    "progress",
    "blog",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_site.urls"
ASGI_APPLICATION = "demo_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "demo_site.context.channel_layer",
            ],
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB") or str(DEMO_DIR / "db.sqlite3"),
        # The server and (in Redis mode) the worker process write to the same file.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STATIC_URL = "/static/"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "index"

REDIS_URL = os.environ.get("REDIS_URL", "").strip()
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "headrace.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    # The workers run in their own process (``manage.py runworker prog-rocker``).
    HEADRACE_EMBEDDED_WORKERS = False
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "headrace.layers.InMemoryChannelLayer"}}

# Durable tasks ("Run as a task" on the progress page): headrace's in-process backend, whose
# queues runserver runs inside the server process.
TASKS = {"default": {"BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend"}}

# Chat frames are short; anything near this size is not a chat message.
HEADRACE_WEBSOCKET_MAX_MESSAGE_SIZE = 64 * 1024

#: Seconds between two steps of a ProgRock job (the article's 200 ms by default).
DEMO_STEP_SECONDS = float(os.environ.get("DEMO_STEP_SECONDS", "0.2"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "headrace": {"handlers": ["console"], "level": "INFO"},
        "demo": {"handlers": ["console"], "level": "INFO"},
    },
}
