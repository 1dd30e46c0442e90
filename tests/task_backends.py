"""The task backends the conformance suite runs over: name -> TASKS entry for a clock.

Parts 2 and 3 add their backends here (Redis, database); the suite runs unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from headrace.layers import ManualClock

QUEUES = ["default", "emails"]


def memory(clock: ManualClock, **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
            "QUEUES": QUEUES,
            "OPTIONS": {"clock": clock, **options},
        }
    }


TASK_BACKENDS: dict[str, Callable[..., dict[str, Any]]] = {"memory": memory}


# -- the database backend (issue 15): the fixtures named in ``fixtures`` give it empty tables --

POSTGRES_ALIAS = "headrace_pg"
SQLITE_ALIAS = "headrace_sqlite"


def _database(database: str) -> Callable[..., dict[str, Any]]:
    def make(clock: ManualClock, **options: Any) -> dict[str, Any]:
        return {
            "default": {
                "BACKEND": "headrace.tasks.backends.database.DatabaseTaskBackend",
                "QUEUES": QUEUES,
                "OPTIONS": {"clock": clock, "database": database, **options},
            }
        }

    return make


sqlite = _database(SQLITE_ALIAS)
sqlite.fixtures = ("task_sqlite",)  # type: ignore[attr-defined]
postgres = _database(POSTGRES_ALIAS)
postgres.fixtures = ("task_postgres",)  # type: ignore[attr-defined]

TASK_BACKENDS.update(sqlite=sqlite, postgres=postgres)


# -- the Redis backend (issue 14): servers the session's fixtures start (tests/redis_servers.py) --

#: The pytest config of the session (set by tests/conftest.py's ``pytest_configure``).
PYTEST_CONFIG: list[Any] = []
_FAILED_OVER: list[bool] = []


def _servers() -> Any:
    from tests.redis_servers import servers

    return servers(PYTEST_CONFIG[0])


def _on_redis(clock: ManualClock, hosts: list[Any], **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
            "QUEUES": QUEUES,
            "OPTIONS": {
                "clock": clock,
                "hosts": hosts,
                "prefix": f"t-{uuid.uuid4().hex[:12]}",
                **options,
            },
        }
    }


def redis(clock: ManualClock, **options: Any) -> dict[str, Any]:
    """On the session's standalone redis-server, with a fresh key prefix for each test."""
    return _on_redis(clock, [_servers().standalone().url], **options)


def redis_cluster(clock: ManualClock, **options: Any) -> dict[str, Any]:
    """On the session's 3-master Redis Cluster."""
    return _on_redis(clock, [_servers().cluster()[0].url], cluster=True, **options)


def redis_sentinel(clock: ManualClock, **options: Any) -> dict[str, Any]:
    """Through the session's Sentinel; the first use fails the master over, so the suite runs
    on a master Sentinel promoted (tests/test_task_redis.py fails over mid-stream too)."""
    _, _, sentinel = _servers().sentinel()
    if not _FAILED_OVER:
        fail_over(sentinel)
        _FAILED_OVER.append(True)
    host = {"sentinels": [("127.0.0.1", sentinel.port)], "master_name": "mymaster"}
    return _on_redis(clock, [host], **options)


def fail_over(sentinel: Any) -> None:
    """Have ``sentinel`` promote the replica of ``mymaster``; return once it names the new
    master (whichever server was master before: other tests fail it over too)."""
    from tests.redis_servers import wait_until

    with sentinel.client() as client:

        def master() -> Any:
            return client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")

        wait_until(
            lambda: client.execute_command("SENTINEL", "REPLICAS", "mymaster"),
            "the sentinel to know the replica",
            timeout=30,
        )
        before = master()
        wait_until(
            lambda: client.execute_command("SENTINEL", "FAILOVER", "mymaster"),
            "the sentinel to accept a fail-over",
            timeout=30,
        )
        wait_until(lambda: master() != before, "the fail-over", timeout=30)


TASK_BACKENDS.update(
    {"redis": redis, "redis-cluster": redis_cluster, "redis-sentinel": redis_sentinel}
)
