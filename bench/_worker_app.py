"""The consumers bench/worker.py runs: a no-op on the ``noop`` channel, for both stacks.

The consumer does nothing but count: it overwrites 8 bytes at the start of a per-process file
with how many messages it has handled (one ``pwrite``, a few microseconds), so the benchmark
can watch progress without a round trip to Redis. The same code runs under headrace and under
Channels; only the import lines differ.
"""

from __future__ import annotations

import os
from typing import Any

_count = 0
_fd = -1


def _counted() -> None:
    global _count, _fd
    if _fd < 0:
        path = os.path.join(os.environ["BENCH_COUNT_DIR"], f"{os.getpid()}.count")
        _fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    _count += 1
    os.pwrite(_fd, _count.to_bytes(8, "little"), 0)


def headrace_application() -> Any:
    from headrace.consumer import AsyncConsumer
    from headrace.routing import ChannelNameRouter, ProtocolTypeRouter

    class NoOp(AsyncConsumer):
        async def job_run(self, message: dict[str, Any]) -> None:
            _counted()

    return ProtocolTypeRouter({"channel": ChannelNameRouter({"noop": NoOp.as_asgi()})})


def channels_application() -> Any:
    from channels.consumer import AsyncConsumer
    from channels.routing import ChannelNameRouter, ProtocolTypeRouter

    class NoOp(AsyncConsumer):  # type: ignore[misc]
        async def job_run(self, message: dict[str, Any]) -> None:
            _counted()

    return ProtocolTypeRouter({"channel": ChannelNameRouter({"noop": NoOp.as_asgi()})})


if os.environ.get("BENCH_STACK") == "channels":
    application = channels_application()
elif os.environ.get("BENCH_STACK") == "headrace":
    application = headrace_application()
