"""Plain Django views the live-server tests use over real HTTP."""

from django.contrib.auth import authenticate, login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


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


def room(request: HttpRequest, room: str) -> HttpResponse:
    return render(request, "chatapp/room.html", {"room": room})
