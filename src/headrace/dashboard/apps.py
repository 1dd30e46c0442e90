"""The dashboard's Django application: add ``"headrace.dashboard"`` to ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["DashboardConfig"]


class DashboardConfig(AppConfig):
    name = "headrace.dashboard"
    label = "headrace_dashboard"
    verbose_name = "headrace dashboard"

    def ready(self) -> None:
        from .memory import connect_signals

        connect_signals()  # the in-memory backend's counters (see headrace.dashboard.memory)
