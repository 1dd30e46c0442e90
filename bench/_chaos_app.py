"""The application bench/chaos.py serves: the tests' chat app, plus a worker channel.

``chaos-work`` messages (``{"type": "job.run", "seq": n, "ms": m}``) take ``m`` milliseconds
and then append ``n`` to ``$CHAOS_DONE_FILE`` (one line, ``O_APPEND``), so the bench can count
which messages a worker finished even if it was killed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from tests.chatapp.asgi import application as chat_application

from headrace.consumer import AsyncConsumer
from headrace.routing import ChannelNameRouter, ProtocolTypeRouter


class Work(AsyncConsumer):
    async def job_run(self, message: dict[str, Any]) -> None:
        await asyncio.sleep(message["ms"] / 1000)
        fd = os.open(os.environ["CHAOS_DONE_FILE"], os.O_CREAT | os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, f"{message['seq']}\n".encode())
        finally:
            os.close(fd)


application = ProtocolTypeRouter(
    {
        **chat_application.application_mapping,
        "channel": ChannelNameRouter({"chaos-work": Work.as_asgi()}),
    }
)
