"""An application routing three background channels (for tests/test_unserved.py)."""

from headrace.consumer import AsyncConsumer
from headrace.routing import ChannelNameRouter, ProtocolTypeRouter

application = ProtocolTypeRouter(
    {
        "channel": ChannelNameRouter(
            {name: AsyncConsumer.as_asgi() for name in ("thumbnails", "emails", "prog-rocker")}
        )
    }
)
