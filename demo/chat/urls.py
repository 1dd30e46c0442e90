from django.urls import path, re_path

from . import views
from .routing import ROOM_PATTERN

app_name = "chat"

urlpatterns = [
    path("", views.lobby, name="lobby"),
    re_path(rf"^(?P<room>{ROOM_PATTERN})/$", views.room, name="room"),
]
