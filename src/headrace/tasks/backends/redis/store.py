"""What every backend object of one ``TASKS`` entry in a process shares: the Redis clients
(built by the Redis layer's :class:`~headrace.layers.redis.topology.Topology` from the same
host settings), the leases this process holds, and the codec between a ``job:<id>`` hash
(:data:`.layout.JOB_FIELDS`) and a :class:`~headrace.tasks.jobs.Job`."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, Final

import redis
from django.core.signals import setting_changed
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from headrace.backoff import Backoff
from headrace.layers.redis.topology import Topology
from headrace.tasks.jobs import Job, JobError
from headrace.tasks.states import JobState

from .layout import READ_FIELDS, QueueKeys
from .settings import RedisTaskSettings

__all__ = [
    "CONNECTION_ERRORS",
    "Ack",
    "LoopPart",
    "SharedStore",
    "close_with_loop",
    "encode_changes",
    "fields_of",
    "job_from_fields",
    "job_from_values",
    "never_sent",
    "number_of",
    "resolve",
    "shared_store",
    "start_generator",
    "sync_clients",
    "text_of",
]

logger = logging.getLogger("headrace.tasks")

CONNECTION_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)
_TIMES: Final = {"started_at": "started", "finished_at": "finished", "last_attempted_at": "last"}

#: A queued acknowledgement: (queue, job id, its part of the ACK script's ARGV).
Ack = tuple[str, str, tuple[Any, ...]]


class LoopPart:
    """The asyncio clients of one event loop, its heartbeat task, and the acknowledgements
    its jobs made in this turn of the loop (sent together: see ``RedisTaskBackend._ack``)."""

    def __init__(self, topology: Topology) -> None:
        self.connections = topology.connect()
        self.heartbeat: asyncio.Task[None] | None = None
        #: Writes this loop's task workers' records (see :mod:`.monitor`).
        self.beacon: asyncio.Task[None] | None = None
        self.closer: AsyncGenerator[None, None] | None = None
        self.starter: asyncio.Task[None] | None = None
        self.acks: list[Ack] = []
        self.send_acks: Callable[[LoopPart], None] | None = None
        #: One task per queue popping wake tokens while ``waiting`` (some claim waits).
        self.listeners: dict[str, asyncio.Future[None]] = {}
        self.waiting = asyncio.Event()
        self.woken = asyncio.Event()
        self.waiters = 0

    async def aclose(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        if self.beacon is not None:
            self.beacon.cancel()
        for listener in self.listeners.values():
            listener.cancel()
        if self.acks and self.send_acks is not None:
            self.send_acks(self)  # the loop is closing: now or never
        await self.connections.aclose()


async def close_with_loop(part: LoopPart) -> AsyncGenerator[None, None]:
    """Started on the loop: the loop's ``shutdown_asyncgens()`` closes ``part``."""
    try:
        yield
    finally:
        await part.aclose()


class SharedStore:
    """What every backend object of one TASKS entry in this process shares."""

    def __init__(self, settings: RedisTaskSettings) -> None:
        self.settings = settings
        self.topology = Topology(
            list(settings.hosts),
            prefix=settings.prefix,
            cluster=settings.cluster,
            cluster_buckets=1,
            common={
                "socket_connect_timeout": settings.connect_timeout,
                "socket_timeout": settings.block_timeout + 10,
                "socket_keepalive": True,
            },
        )
        self.lock = threading.Lock()
        self._clients: list[Any] | None = None
        self.keys: dict[str, QueueKeys] = {}
        self.leases: dict[str, tuple[str, str]] = {}  # job id -> (queue, lease token)
        #: Leases a heartbeat found gone: kept so the late ack carries its (stale) token.
        self.gone: set[str] = set()
        self.queue_of: dict[str, str] = {}  # job id -> queue, for jobs seen here (bounded)
        self.claimed: dict[str, Job] = {}  # the jobs this process holds leases on, as claimed
        self.ack_backoff = Backoff(
            f"acknowledging tasks on Redis ({settings.prefix})", logger=logger
        )
        self.watchers: dict[str, Callable[[], None]] = {}
        self.finish_waiters: dict[str, list[Callable[[], None]]] = {}
        self.loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopPart] = (
            weakref.WeakKeyDictionary()
        )
        self.renewals = 0
        self.leases_lost = 0
        self.stale_acks = 0
        self.heartbeat_backoff = Backoff(
            f"renewing task leases on Redis ({settings.prefix})", logger=logger
        )
        self.rotation = itertools.count()

    def queue_keys(self, queue: str) -> QueueKeys:
        found = self.keys.get(queue)
        if found is None:
            found = self.keys[queue] = QueueKeys(self.settings.prefix, queue)
        return found

    def clients(self) -> list[Any]:
        if self._clients is None:
            with self.lock:
                if self._clients is None:
                    self._clients = sync_clients(self.topology, self.settings)
        return self._clients

    def client_index(self, queue: str) -> int:
        topology = self.topology
        return topology.client_of[topology.shard_of(queue)]

    def remember(self, job_id: str, queue: str) -> None:
        if len(self.queue_of) > 100_000:
            self.queue_of.clear()
        self.queue_of[job_id] = queue


def sync_clients(topology: Topology, settings: RedisTaskSettings) -> list[Any]:
    """Blocking clients for the same servers the topology's asyncio clients reach (the store
    API the worker calls between awaits is synchronous)."""
    from redis.cluster import ClusterNode, RedisCluster
    from redis.sentinel import Sentinel

    common: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.connect_timeout + 5,
        "socket_keepalive": True,
        # Django's backends are per thread; each thread that enqueues may hold a connection.
        "max_connections": 1000,
    }
    if topology.cluster:
        first = topology.hosts[0]
        options = {**common, **dict(first.kwargs)}
        if first.url is not None:
            return [RedisCluster.from_url(first.url, **options)]
        nodes = [
            ClusterNode(dict(spec.kwargs)["host"], dict(spec.kwargs)["port"])  # type: ignore[no-untyped-call]
            for spec in topology.hosts
        ]
        options = {k: v for k, v in options.items() if k not in ("host", "port")}
        return [RedisCluster(startup_nodes=nodes, **options)]
    clients: list[Any] = []
    for spec in topology.hosts:
        options = {**common, **dict(spec.kwargs)}
        if spec.sentinels:
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                list(spec.sentinels), sentinel_kwargs=dict(spec.sentinel_kwargs), **options
            )
            clients.append(sentinel.master_for(spec.master_name))  # type: ignore[no-untyped-call]
        elif spec.url is not None:
            clients.append(redis.Redis.from_url(spec.url, **options))
        else:
            clients.append(redis.Redis(**options))
    return clients


_stores: dict[tuple[str, int], tuple[Mapping[str, Any], SharedStore]] = {}
_stores_lock = threading.Lock()


def shared_store(alias: str, params: Mapping[str, Any], settings: RedisTaskSettings) -> SharedStore:
    """The store of this ``TASKS`` entry (``params``, kept alive with it so that its id is
    not reused) in this process."""
    with _stores_lock:
        found = _stores.get((alias, id(params)))
        if found is None:
            found = _stores[alias, id(params)] = (params, SharedStore(settings))
    return found[1]


def _forget_stores(*, setting: str, **kwargs: Any) -> None:
    if setting in ("TASKS", "CHANNEL_LAYERS"):
        with _stores_lock:
            _stores.clear()


setting_changed.connect(_forget_stores)


def never_sent(error: BaseException) -> bool:
    """True when a command failed before reaching Redis (so sending it again cannot double it)."""
    if isinstance(error, ReadOnlyError):
        return True
    text = str(error).lower()
    return isinstance(error, RedisConnectionError | OSError) and any(
        sign in text for sign in ("connecting to", "connection refused", "loading", "reset")
    )


def text_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def fields_of(flat: Sequence[Any]) -> dict[str, str]:
    return {text_of(flat[i]): text_of(flat[i + 1]) for i in range(0, len(flat), 2)}


def number_of(fields: Mapping[str, str], name: str) -> float | None:
    value = fields.get(name)
    return float(value) if value else None


def job_from_fields(job_id: str, fields: Mapping[str, str]) -> Job:
    """A :class:`Job` from a ``job:<id>`` hash (see :data:`.layout.JOB_FIELDS`)."""
    return job_from_values([job_id, *map(fields.get, READ_FIELDS[1:])])


#: ``json.loads`` without its checks of the argument (a claim decodes a spec per job).
_decode_json: Final = json.JSONDecoder().decode
_NO_ERRORS: Final = (b"[]", "[]")
_ONE: Final = (b"1", "1")


def _number(value: bytes | str | None) -> float | None:
    return float(value) if value else None


def job_from_values(values: Sequence[bytes | str | None]) -> Job:
    """A :class:`Job` from a job's :data:`.layout.READ_FIELDS` values, in that order, as
    Redis returns them (bytes; numbers and JSON are parsed from the bytes as they are)."""
    (
        job_id, spec_json, state, enqueued, due, expires, started, finished, last, workers,
        errors, result, retries, progress, cancel, result_expires,
    ) = values  # fmt: skip
    spec = _decode_json(text_of(spec_json))
    workers = text_of(workers) if workers else ""
    return Job(
        id=text_of(job_id),
        task_path=spec["task_path"],
        args=spec["args"],
        kwargs=spec["kwargs"],
        queue=spec["queue"],
        priority=spec["priority"],
        backend=spec["backend"],
        state=JobState(text_of(state)),
        enqueued_at=float(enqueued),  # type: ignore[arg-type]
        due_at=float(due or enqueued),  # type: ignore[arg-type]
        expires_at=_number(expires),
        started_at=_number(started),
        finished_at=_number(finished),
        last_attempted_at=_number(last),
        worker_ids=tuple(workers.split("\n")) if workers else (),
        errors=()
        if not errors or errors in _NO_ERRORS
        else tuple(JobError(**error) for error in json.loads(errors)),
        return_value=json.loads(result) if result else None,
        retries=int(retries or 0),
        key=spec.get("key"),
        owner=spec.get("owner"),
        progress=json.loads(progress) if progress else None,
        cancel_requested=cancel in _ONE,
        result_expires_at=_number(result_expires),
        options=spec.get("options") or {},
    )


def encode_changes(changes: Mapping[str, Any], now: float) -> tuple[list[str], float]:
    """The hash fields a move sets, and the delay (s) of a move to READY."""
    pairs: list[str] = []
    delay = 0.0
    for name, value in changes.items():
        if name == "errors":
            errors = [
                {"exception_class_path": e.exception_class_path, "traceback": e.traceback}
                for e in value
            ]
            pairs += ["errors", json.dumps(errors)]
        elif name == "return_value":  # most tasks return None: no need to ask json
            pairs += ["result", "null" if value is None else json.dumps(value)]
        elif name == "retries":
            pairs += ["retries", str(int(value))]
        elif name == "due_at":
            delay = max(0.0, float(value) - now)
        elif name == "progress":
            pairs += ["progress", json.dumps(value)]
        elif name in _TIMES:  # the store's clock sets the time of the move itself
            if value is not None:
                pairs += [_TIMES[name], repr(float(value))]
        elif name == "cancel_requested":
            pairs += ["cancel", "1" if value else "0"]
        else:
            raise TypeError(f"the Redis task store cannot change a job's {name!r}")
    return pairs, delay


async def start_generator(generator: AsyncGenerator[None, None]) -> None:
    await anext(generator)


def resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
