from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from headrace.tasks.worker import embedded_task_backends


def progress(request: HttpRequest) -> HttpResponse:
    """The ProgRock page: a button, and a bar per job; the socket does the rest."""
    return render(
        request,
        "progress/page.html",
        {
            "section": "progress",
            "step_ms": round(settings.DEMO_STEP_SECONDS * 1000),
            # The in-memory task backend runs its jobs inside this server process only; with
            # REDIS_URL the server runs no workers (a Redis task backend comes later).
            "tasks_run_here": bool(embedded_task_backends()),
        },
    )
