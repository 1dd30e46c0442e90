"""Consumers that are not in the seed: they exercise auth, bad input and slow clients."""

from __future__ import annotations

import json
from typing import Any

from django.urls import re_path

from headrace.generic.sse import AsyncSseConsumer
from headrace.generic.websocket import AsyncJsonWebsocketConsumer, WebsocketConsumer


class WhoAmIConsumer(AsyncJsonWebsocketConsumer):
    """Tells the client who its session says it is."""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        await self.send_json(
            {"authenticated": user.is_authenticated, "username": user.get_username()}
        )


class EchoJsonConsumer(AsyncJsonWebsocketConsumer):
    """Echoes JSON; ``{"boom": true}`` makes the handler raise; ``{"flood": n, "size": s}``
    sends n frames of s bytes as fast as it can, then tells the ``{"watch": true}`` sockets."""

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("boom"):
            raise RuntimeError("boom requested by the client")
        if content.get("watch"):
            await self.channel_layer.group_add("flood-watch", self.channel_name)
            await self.send_json({"watching": True})
            return
        if "flood" in content:
            chunk = "x" * int(content["size"])
            for _ in range(int(content["flood"])):
                await self.send(text_data=chunk)
            report = {"flooded": True, "closed": self._outbox.closed}
            await self.channel_layer.group_send(
                "flood-watch", {"type": "websocket.send", "text": json.dumps(report)}
            )
            return
        await self.send_json({"echo": content})


class SyncEchoConsumer(WebsocketConsumer):
    """A sync consumer: echoes text with the name of the thread that handled it."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=f"sync:{text_data}")


class NewsStream(AsyncSseConsumer):
    """Server-sent events for the "news" group (forwarded ``sse.event`` messages)."""

    groups = ["news"]


websocket_urlpatterns = [
    re_path(r"^ws/whoami/$", WhoAmIConsumer.as_asgi()),
    re_path(r"^ws/echo/$", EchoJsonConsumer.as_asgi()),
    re_path(r"^ws/sync-echo/$", SyncEchoConsumer.as_asgi()),
]
