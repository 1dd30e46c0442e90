"""Durable tasks on Redis: at-least-once delivery with leases (see :mod:`.backend`)."""

from headrace.tasks.backends.redis.backend import (
    DEFAULT_LEASE,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_PREFIX,
    QueueStatistics,
    RedisTaskBackend,
    RedisTaskSettings,
    RedisTaskStatistics,
    TaskStoreUnavailable,
)

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_PREFIX",
    "QueueStatistics",
    "RedisTaskBackend",
    "RedisTaskSettings",
    "RedisTaskStatistics",
    "TaskStoreUnavailable",
]
