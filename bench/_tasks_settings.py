"""Django settings for bench/tasks.py: the in-memory task backend and channel layer."""

from __future__ import annotations

from typing import Any

SECRET_KEY = "bench-not-secret"
USE_TZ = True
DATABASES: dict[str, Any] = {}
INSTALLED_APPS = ["headrace"]
CHANNEL_LAYERS = {"default": {"BACKEND": "headrace.layers.InMemoryChannelLayer"}}
TASKS = {"default": {"BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend"}}
