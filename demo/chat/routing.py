"""WebSocket routes of the chat (the seed's routing.py, with ASCII-only room names)."""

from django.urls import re_path

from . import consumers

#: Room names: ASCII letters, digits, ``-`` and ``_`` (they become channel-layer group names).
ROOM_PATTERN = r"[A-Za-z0-9_-]{1,40}"

websocket_urlpatterns = [
    re_path(rf"^ws/chat/(?P<room>{ROOM_PATTERN})/$", consumers.ChatConsumer.as_asgi()),
]
