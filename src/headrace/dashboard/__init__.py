"""A live dashboard of headrace's tasks and real-time side, and ``/metrics`` for Prometheus.

Add ``"headrace.dashboard"`` to ``INSTALLED_APPS``, ``path("headrace/",
include("headrace.dashboard.urls"))`` to the URLs and
:data:`headrace.dashboard.routing.websocket_urlpatterns` to the ASGI routing; see
``docs/how-to/monitoring.md``. The dashboard reads the task backends through
:class:`~headrace.dashboard.inspect.TaskInspector` (:mod:`headrace.dashboard.inspect`).
"""

from __future__ import annotations

__all__: list[str] = []
