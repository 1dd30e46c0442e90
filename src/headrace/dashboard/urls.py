"""``path("headrace/", include("headrace.dashboard.urls"))``: the dashboard's pages.

Its WebSocket route is in :mod:`headrace.dashboard.routing` and must sit at the same prefix
plus ``ws/`` (``headrace/ws/`` here), which is where the page connects.
"""

from __future__ import annotations

from django.urls import path

from . import views
from .metrics import metrics_view

__all__ = ["app_name", "urlpatterns"]

app_name = "headrace_dashboard"

urlpatterns = [
    path("", views.index, name="index"),
    path("jobs/<str:job_id>/", views.job_detail, name="job"),
    path("jobs/<str:job_id>/retry/", views.retry_job, name="retry"),
    path("jobs/<str:job_id>/cancel/", views.cancel_job, name="cancel"),
    path("jobs/<str:job_id>/purge/", views.purge_job, name="purge"),
    path("metrics", metrics_view, name="metrics"),
]
