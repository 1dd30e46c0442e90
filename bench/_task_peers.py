"""The peers bench/tasks_redis.py runs beside headrace, on the same Redis, each with a no-op
task that counts itself done (one INCR, as headrace's). Worker commands:

    celery -A bench._task_peers worker --pool threads --concurrency 8 -Q bench
    dramatiq bench._task_peers --processes 1 --threads 8
    huey_consumer bench._task_peers.huey -w 8 -k thread

At-least-once where the peer has it: Celery with ``task_acks_late`` (its default acks on
receipt), Dramatiq's Redis broker (acks after the actor ran); Huey pops jobs without an
acknowledgement (a worker killed mid-job loses it), so it runs as it ships.
"""

from __future__ import annotations

import os
from typing import Any

import redis

URL = os.environ.get("HEADRACE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
_client: Any = None


def counter() -> Any:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(URL)
    return _client


# -- Celery --------------------------------------------------------------------------------------
from celery import Celery  # noqa: E402

app = Celery("bench", broker=URL)
app.conf.update(
    task_acks_late=True,
    task_default_queue="bench",
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def celery_noop() -> None:
    counter().incr("bench:done")


# -- Dramatiq ------------------------------------------------------------------------------------
import dramatiq  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402

dramatiq.set_broker(RedisBroker(url=URL, namespace="bench-dramatiq"))


@dramatiq.actor(queue_name="bench", max_retries=0)
def dramatiq_noop() -> None:
    counter().incr("bench:done")


# -- Huey ----------------------------------------------------------------------------------------
from huey import RedisHuey  # noqa: E402

huey = RedisHuey("bench-huey", url=URL, results=False)


@huey.task()
def huey_noop() -> None:
    counter().incr("bench:done")
