"""The chat consumer: the seed's ChatConsumer, grown into something people can use.

Same shape as the article's: the room comes from the URL, every connection joins the room's
group, and a message is a ``group_send`` that each member's ``chat_message`` forwards to its
browser. Added on top: names from Django auth (or a nickname for guests), join and leave
notices, the last messages for a newcomer, and a polite refusal of anything malformed.

Frames, client to server: ``{"message": "text"}``. Server to client, each with a ``type``:
``welcome``, ``history``, ``message``, ``notice`` and ``error``.
"""

from __future__ import annotations

import json
import re
import secrets
import unicodedata
from typing import Any
from urllib.parse import parse_qs

from headrace.db import database_sync_to_async
from headrace.generic.websocket import AsyncWebsocketConsumer

from .models import HISTORY_SIZE, MAX_MESSAGE_LENGTH, Message

__all__ = ["ChatConsumer", "clean_nickname", "group_name"]

NICKNAME_LENGTH = 24


def group_name(room: str) -> str:
    """The channel-layer group of a room (room names are already ASCII, see routing)."""
    return f"chat.{room}"


def clean_nickname(raw: str) -> str:
    """A guest's nickname, made safe to show: printable, single-spaced, 24 characters at most.

    An empty result becomes ``guest-XXXX`` so that nobody is nameless.
    """
    printable = "".join(ch for ch in raw if unicodedata.category(ch)[0] not in "CZ" or ch == " ")
    name = re.sub(r"\s+", " ", printable).strip()[:NICKNAME_LENGTH].strip()
    return name or f"guest-{secrets.randbelow(10000):04d}"


@database_sync_to_async
def _history(room: str) -> list[dict[str, Any]]:
    recent = Message.objects.filter(room=room).order_by("-id")[:HISTORY_SIZE]
    return [message.as_event() for message in reversed(recent)]


@database_sync_to_async
def _save(room: str, author: str, authenticated: bool, text: str) -> dict[str, Any]:
    message = Message.objects.create(
        room=room, author=author, authenticated=authenticated, text=text
    )
    return message.as_event()


class ChatConsumer(AsyncWebsocketConsumer):
    room: str
    group: str
    name: str
    authenticated: bool
    joined = False

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = group_name(self.room)
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            self.authenticated = True
            self.name = user.get_username()
        else:
            self.authenticated = False
            query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
            self.name = clean_nickname(query.get("name", [""])[0])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.joined = True
        await self.send_json(
            {"type": "welcome", "name": self.name, "authenticated": self.authenticated}
        )
        await self.send_json({"type": "history", "messages": await _history(self.room)})
        await self.channel_layer.group_send(
            self.group, {"type": "chat.notice", "text": f"{self.name} joined"}
        )

    async def disconnect(self, code: int) -> None:
        if not self.joined:
            return
        await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.channel_layer.group_send(
            self.group, {"type": "chat.notice", "text": f"{self.name} left"}
        )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self.refuse("binary frames are not accepted; send JSON text")
            return
        try:
            payload = json.loads(text_data)
        except ValueError:
            await self.refuse("that frame is not JSON")
            return
        if not isinstance(payload, dict) or not isinstance(payload.get("message"), str):
            await self.refuse('expected {"message": "some text"}')
            return
        text = payload["message"].strip()
        if not text:
            await self.refuse("an empty message was not sent")
            return
        if len(text) > MAX_MESSAGE_LENGTH:
            await self.refuse(
                f"message too long: {len(text)} characters, at most {MAX_MESSAGE_LENGTH}"
            )
            return
        event = await _save(self.room, self.name, self.authenticated, text)
        await self.channel_layer.group_send(self.group, {"type": "chat.message", **event})

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A message said in the room (from any connection, in any process)."""
        fields = ("id", "author", "authenticated", "text", "sent")
        await self.send_json({"type": "message", **{key: event[key] for key in fields}})

    async def chat_notice(self, event: dict[str, Any]) -> None:
        """Someone joined or left."""
        await self.send_json({"type": "notice", "text": event["text"]})

    async def refuse(self, reason: str) -> None:
        """Tell the client what was wrong with its frame; the connection stays open."""
        await self.send_json({"type": "error", "error": reason})

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content))
