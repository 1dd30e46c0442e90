"""Not in the seed: background consumers for the multi-process worker tests and benches.

``jobs`` records the id of every message it handles in ``$HEADRACE_JOBS_DIR/<pid>.ids`` (one
line each, flushed at once), so a test can count which process handled what. A ``job.slow``
message is noted in ``<pid>.started`` first (and reported to the channel ``report_to``, when
given, so a test can wait for it) and takes ``seconds`` to finish (for the graceful stop
test). ``noop`` does nothing at all: the worker benchmark's consumer.
"""

import asyncio
import os

from headrace.consumer import AsyncConsumer


class JobRecorder(AsyncConsumer):
    _out = None

    async def job_run(self, message):
        cls = type(self)
        if cls._out is None:
            cls._out = _open("ids")
        cls._out.write(f"{message['id']}\n")

    async def job_slow(self, message):
        with _open("started") as started:
            started.write(f"{message['id']}\n")
        if message.get("report_to"):
            await self.channel_layer.send(
                message["report_to"], {"type": "job.started", "id": message["id"]}
            )
        await asyncio.sleep(message["seconds"])
        await self.job_run(message)


def _open(suffix):
    path = os.path.join(os.environ["HEADRACE_JOBS_DIR"], f"{os.getpid()}.{suffix}")
    return open(path, "a", buffering=1)


class NoOp(AsyncConsumer):
    async def job_run(self, message):
        pass
