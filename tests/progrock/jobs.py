"""Not in the seed: a background consumer for the multi-process worker tests and benches.

``jobs`` records the id of every message it handles in ``$HEADRACE_JOBS_DIR/<pid>.ids`` (one
line each, flushed at once), so a test can count which process handled what. ``noop`` does
nothing at all: the worker benchmark's consumer.
"""

import os

from headrace.consumer import AsyncConsumer


class JobRecorder(AsyncConsumer):
    _out = None

    async def job_run(self, message):
        cls = type(self)
        if cls._out is None:
            directory = os.environ["HEADRACE_JOBS_DIR"]
            path = os.path.join(directory, f"{os.getpid()}.ids")
            cls._out = open(path, "a", buffering=1)  # noqa: ASYNC230, SIM115
        cls._out.write(f"{message['id']}\n")


class NoOp(AsyncConsumer):
    async def job_run(self, message):
        pass
