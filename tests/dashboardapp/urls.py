from django.urls import include, path

from headrace.dashboard.metrics import metrics_view

urlpatterns = [
    path("headrace/", include("headrace.dashboard.urls")),
    path("metrics", metrics_view),
]
