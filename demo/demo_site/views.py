from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def index(request: HttpRequest) -> HttpResponse:
    """What each page shows, and which part of headrace makes it work."""
    return render(request, "demo_site/index.html", {"section": "index"})
