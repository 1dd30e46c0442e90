"""The chat pages: a lobby to pick a room, and the room itself."""

from __future__ import annotations

import re

from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from .models import MAX_MESSAGE_LENGTH, Message
from .routing import ROOM_PATTERN


def lobby(request: HttpRequest) -> HttpResponse:
    """Pick a room: a form, and the rooms where people talked last."""
    wanted = request.GET.get("room", "").strip()
    error = ""
    if wanted:
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", wanted).strip("-")[:40]
        if re.fullmatch(ROOM_PATTERN, slug):
            return redirect("chat:room", room=slug)
        error = "Use letters, digits, - or _ for the room name."
    rooms = (
        Message.objects.values("room")
        .annotate(messages=Count("id"), last=Max("sent"))
        .order_by("-last")[:8]
    )
    return render(request, "chat/lobby.html", {"section": "chat", "rooms": rooms, "error": error})


def room(request: HttpRequest, room: str) -> HttpResponse:
    """A chat room; the page talks to ``/ws/chat/<room>/``."""
    return render(
        request,
        "chat/room.html",
        {"section": "chat", "room": room, "max_length": MAX_MESSAGE_LENGTH},
    )
