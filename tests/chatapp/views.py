"""Plain Django views the live-server tests use over real HTTP."""

from django.contrib.auth import authenticate, login
from django.http import HttpRequest, HttpResponse


def login_view(request: HttpRequest) -> HttpResponse:
    user = authenticate(
        request, username=request.GET.get("username"), password=request.GET.get("password")
    )
    if user is None:
        return HttpResponse("no", status=403)
    login(request, user)
    return HttpResponse("ok")


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("chat index")
