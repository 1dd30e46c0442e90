from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def progress(request: HttpRequest) -> HttpResponse:
    """The ProgRock page: a button, and a bar per job; the socket does the rest."""
    return render(
        request,
        "progress/page.html",
        {"section": "progress", "step_ms": round(settings.DEMO_STEP_SECONDS * 1000)},
    )
