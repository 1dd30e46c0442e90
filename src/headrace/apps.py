"""The Django application: add ``"headrace"`` to ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["HeadraceConfig"]


class HeadraceConfig(AppConfig):
    name = "headrace"
    verbose_name = "headrace"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
        from .tasks import beat  # noqa: F401 - registers the schedule check
        from .tasks import checks as task_checks  # noqa: F401 - registers the task checks
