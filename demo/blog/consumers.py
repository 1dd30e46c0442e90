"""The live blog's socket: a reader joins the ``liveblog`` group and is told of every save.

The page only listens. On (re)connect it may pass ``?after=<id>``, the newest post it shows,
and is sent the posts saved meanwhile — so a reader who lost the connection misses nothing.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from headrace.db import database_sync_to_async
from headrace.generic.websocket import AsyncWebsocketConsumer

from .models import Post
from .signals import LIVEBLOG_GROUP

__all__ = ["LiveBlogConsumer"]

#: Most posts sent to catch a reconnecting reader up.
CATCH_UP_LIMIT = 20


@database_sync_to_async
def _posts_after(after: int) -> list[dict[str, Any]]:
    newer = Post.objects.filter(id__gt=after).order_by("-id")[:CATCH_UP_LIMIT]
    return [post.as_event() for post in reversed(newer)]


class LiveBlogConsumer(AsyncWebsocketConsumer):
    groups = [LIVEBLOG_GROUP]

    async def connect(self) -> None:
        await self.accept()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        after = query.get("after", [""])[0]
        if after.isdigit():
            for post in await _posts_after(int(after)):
                await self.send_json({"type": "post", "created": True, "post": post})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send_json({"type": "error", "error": "this socket only listens"})

    async def blog_post(self, event: dict[str, Any]) -> None:
        """A post was saved (created or edited), anywhere."""
        await self.send_json({"type": "post", "created": event["created"], "post": event["post"]})

    async def blog_delete(self, event: dict[str, Any]) -> None:
        """A post was deleted."""
        await self.send_json({"type": "delete", "id": event["id"]})

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content))
