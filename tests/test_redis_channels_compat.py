"""headrace's Redis layer as the BACKEND of an unmodified Django Channels project.

The consumer below is plain Channels code (channels is installed by the ``bench`` extra);
only CHANNEL_LAYERS names headrace's backend.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator

from headrace.exceptions import LayerConnectionError
from headrace.layers.redis import RedisChannelLayer
from tests.redis_servers import servers


class ChatConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        await self.channel_layer.group_add("chat", self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard("chat", self.channel_name)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        await self.channel_layer.group_send(
            "chat", {"type": "chat.message", "text": content["text"]}
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"text": event["text"]})


@pytest.fixture
def channels_settings(settings: Any, pytestconfig: pytest.Config) -> Iterator[None]:
    server = servers(pytestconfig).standalone()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "headrace.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [server.url], "prefix": f"compat-{uuid.uuid4().hex[:8]}"},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.mark.usefixtures("channels_settings")
async def test_channels_consumers_chat_through_headrace_redis_layer() -> None:
    layer = get_channel_layer()
    assert isinstance(layer, RedisChannelLayer)
    alice = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    bob = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    try:
        assert (await alice.connect())[0]
        assert (await bob.connect())[0]
        await alice.send_json_to({"text": "hello bob"})
        assert await bob.receive_json_from(timeout=5) == {"text": "hello bob"}
        assert await alice.receive_json_from(timeout=5) == {"text": "hello bob"}

        # Code outside any consumer (a view, a signal handler) sends to the group too.
        await layer.group_send("chat", {"type": "chat.message", "text": "from a view"})
        for client in (alice, bob):
            assert await client.receive_json_from(timeout=5) == {"text": "from a view"}

        await bob.disconnect()
        await alice.send_json_to({"text": "bob left"})
        assert await alice.receive_json_from(timeout=5) == {"text": "bob left"}
        assert await alice.receive_nothing(timeout=0.05)
    finally:
        await alice.disconnect()
        await asyncio.sleep(0)
        await layer.flush()
        await layer.close()


async def test_close_pools_closes_like_close_and_the_layer_works_again(
    pytestconfig: pytest.Config,
) -> None:
    """channels_redis users call ``close_pools()`` at the end of async_to_sync blocks and in
    test teardown: it closes this event loop's connections and readers, as close() does."""
    server = servers(pytestconfig).standalone()
    layer = RedisChannelLayer(hosts=[server.url], prefix=f"pools-{uuid.uuid4().hex[:8]}")
    channel = await layer.new_channel()
    waiting = asyncio.create_task(layer.receive(channel))
    await asyncio.wait_for(layer.wait_reading(channel), 5)
    await layer.close_pools()
    with pytest.raises(LayerConnectionError, match="closed while receive"):
        await waiting  # the reader of the closed loop state ended, as with close()
    await layer.send(channel, {"type": "again"})  # a new loop state, new connections
    assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "again"}
    await layer.flush()
    await layer.close_pools()
