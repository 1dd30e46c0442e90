"""System checks for ``TASKS`` entries that use headrace backends (``manage.py check`` and
every command that runs checks, so a bad entry stops start-up instead of a worker)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.core.checks.registry import registry

__all__ = ["check_task_backends"]


def _django_checks_backends() -> bool:
    """Whether Django's own ``check_tasks`` is registered: it reports each backend's
    ``check()`` (Django 6.0 and later), so reporting them here too would list each twice."""
    return any(
        getattr(check, "__module__", "") == "django.tasks.checks"
        for check in registry.registered_checks
    )


@register()
def check_task_backends(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Each headrace backend in ``TASKS`` can be built and its QUEUES and OPTIONS are valid
    (the latter reported by Django's own task check where it runs one)."""
    configured = getattr(settings, "TASKS", None) or {}
    if not isinstance(configured, dict):
        return []  # Django's own handler reports it
    from django.tasks import task_backends

    from headrace.tasks.backends.base import HeadraceTaskBackend

    messages: list[CheckMessage] = []
    own_checks = not _django_checks_backends()
    for alias, entry in configured.items():
        path = entry.get("BACKEND", "") if isinstance(entry, dict) else ""
        if not str(path).startswith("headrace."):
            continue
        try:
            backend = task_backends[alias]
        except Exception as error:
            messages.append(Error(f"TASKS[{alias!r}] cannot be used: {error}", id="headrace.E100"))
            continue
        if own_checks and isinstance(backend, HeadraceTaskBackend):
            messages.extend(backend.check())
    return messages
