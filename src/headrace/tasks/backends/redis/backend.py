"""The Redis task backend: durable jobs, at-least-once, with leases instead of a visibility
timeout.

::

    TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {
                "hosts": ["redis://localhost:6379/0"],   # or "layer": "default"
                "lease": 30,                             # seconds; renewed by heartbeat
                "max_deliveries": 3,
            },
        }
    }

A worker claims a job and writes its lease in one script, renews the leases it holds by
heartbeat and acknowledges with the lease's token: a job whose worker dies goes back to its
queue when the lease lapses (with a ``WorkerLost`` error), and is dead-lettered after
``max_deliveries`` such deaths; a long job on a healthy worker runs once, however long. The key
layout is in :mod:`.layout`, the scripts in :mod:`.scripts`; delivery guarantees are explained
in ``docs/explanation/task-delivery.md``.

``OPTIONS`` (besides the core's, see :mod:`headrace.tasks.backends.base`):

``hosts`` / ``cluster``
    Servers as the Redis channel layer takes them: ``redis://`` / ``rediss://`` URLs (with a
    password or an ACL user), ``(host, port)`` pairs, dicts of redis-py arguments, a dict with
    ``sentinels`` and ``master_name`` for Sentinel; ``cluster: True`` for Redis Cluster.
``layer``
    A ``CHANNEL_LAYERS`` alias whose Redis servers to use instead of ``hosts``.
``prefix`` ("headrace-tasks")
    The start of every key.
``lease`` (30), ``heartbeat_interval`` (lease / 6), ``max_deliveries`` (3)
    How long a claimed job stays a worker's without a heartbeat; how often a worker renews
    its leases (and learns of cancellations requested elsewhere); how many worker deaths a
    job survives before it is dead-lettered.
``block_timeout`` (5), ``connect_timeout`` (5)
    How long an idle worker's blocking pop waits before it is issued again; how long a
    command keeps trying to reach Redis before it raises :class:`TaskStoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis
from django.core import checks
from django.core.signals import setting_changed
from django.tasks.exceptions import TaskResultDoesNotExist
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from headrace.backoff import Backoff, pause_for
from headrace.exceptions import ConfigurationError, HeadraceError
from headrace.layers.redis.config import RedisConfig
from headrace.layers.redis.topology import Topology
from headrace.tasks.backends.base import HeadraceTaskBackend
from headrace.tasks.exceptions import LeaseLost, UnknownTask
from headrace.tasks.jobs import Job, JobError
from headrace.tasks.states import JobState, Move, advance

from .layout import QueueKeys, check_queue_name
from .scripts import CANCEL, CLAIM, CLAIM_ONE, ENQUEUE, MOVE, PROGRESS, RENEW, Script

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

logger = logging.getLogger("headrace.tasks")

DEFAULT_PREFIX: Final = "headrace-tasks"
DEFAULT_LEASE: Final = 30.0
DEFAULT_MAX_DELIVERIES: Final = 3
_OWN_OPTIONS: Final = (
    "hosts",
    "cluster",
    "layer",
    "prefix",
    "lease",
    "heartbeat_interval",
    "max_deliveries",
    "block_timeout",
    "connect_timeout",
)
_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_CONNECTION_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)
_COUNTERS: Final = (
    "enqueued",
    "claimed",
    "successful",
    "failed",
    "cancelled",
    "retried",
    "returned",
    "expired",
    "lost",
    "dead",
    "stale_acks",
    "renewals",
)


class TaskStoreUnavailable(HeadraceError):
    """Redis could not be reached (within ``connect_timeout``): nothing was stored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisTaskSettings:
    """The checked ``OPTIONS`` of a :class:`RedisTaskBackend` (see the module docstring)."""

    hosts: tuple[Any, ...] = (("localhost", 6379),)
    cluster: bool = False
    layer: str | None = None
    prefix: str = DEFAULT_PREFIX
    lease: float = DEFAULT_LEASE
    heartbeat_interval: float = DEFAULT_LEASE / 6
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    block_timeout: float = 5.0
    connect_timeout: float = 5.0

    @classmethod
    def from_options(cls, alias: str, options: Mapping[str, Any]) -> RedisTaskSettings:
        """Check ``options``; ConfigurationError lists every mistake."""
        where = f"TASKS[{alias!r}]['OPTIONS']"
        problems: list[str] = []

        def seconds(name: str, default: float) -> float:
            value = options.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                problems.append(f"{where}[{name!r}] must be a positive number, got {value!r}")
                return default
            return float(value)

        lease = seconds("lease", DEFAULT_LEASE)
        heartbeat = seconds("heartbeat_interval", lease / 6)
        if heartbeat >= lease:
            problems.append(
                f"{where}['heartbeat_interval'] ({heartbeat:g}) must be shorter than the lease "
                f"({lease:g}), or leases lapse under a healthy worker"
            )
        deliveries = options.get("max_deliveries", DEFAULT_MAX_DELIVERIES)
        if type(deliveries) is not int or deliveries < 1:
            problems.append(f"{where}['max_deliveries'] must be an int >= 1, got {deliveries!r}")
            deliveries = DEFAULT_MAX_DELIVERIES
        layer = options.get("layer")
        redis_keys: dict[str, Any] = {"prefix": options.get("prefix", DEFAULT_PREFIX)}
        if layer is not None:
            if "hosts" in options or "cluster" in options:
                problems.append(f"{where}: give 'layer' or 'hosts'/'cluster', not both")
            try:
                redis_keys.update(_layer_servers(layer))
            except ConfigurationError as error:
                problems.append(f"{where}['layer']: {error}")
        else:
            for name in ("hosts", "cluster"):
                if name in options:
                    redis_keys[name] = options[name]
        try:
            checked = RedisConfig.from_settings(redis_keys, source=where)
        except ConfigurationError as error:
            problems.extend(error.problems or [str(error)])
            checked = RedisConfig()
        if problems:
            raise ConfigurationError("; ".join(problems), problems=problems)
        return cls(
            hosts=tuple(checked.hosts),
            cluster=checked.cluster,
            layer=layer,
            prefix=checked.prefix,
            lease=lease,
            heartbeat_interval=heartbeat,
            max_deliveries=deliveries,
            block_timeout=seconds("block_timeout", 5.0),
            connect_timeout=seconds("connect_timeout", 5.0),
        )


def _layer_servers(alias: object) -> dict[str, Any]:
    from django.conf import settings

    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    if not isinstance(alias, str) or alias not in layers:
        raise ConfigurationError(f"no CHANNEL_LAYERS alias {alias!r} (have: {sorted(layers)})")
    entry = layers[alias]
    if not str(entry.get("BACKEND", "")).endswith("RedisChannelLayer"):
        raise ConfigurationError(
            f"CHANNEL_LAYERS[{alias!r}] is {entry.get('BACKEND')!r}, not a Redis channel layer"
        )
    config = dict(entry.get("CONFIG") or {})
    return {name: config[name] for name in ("hosts", "cluster") if name in config}


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStatistics:
    """One queue's state and counters, as Redis holds them (the same for every process)."""

    queue: str
    ready: int  #: due now
    delayed: int  #: waiting for their due time
    running: int  #: leased to a worker
    dead: int  #: dead letters
    finished: int  #: results still kept
    counters: Mapping[str, int]  #: enqueued, claimed, successful, failed, lost, stale_acks...


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisTaskStatistics:
    """This process's view (counters since the backend's store was made here)."""

    leases_held: int
    renewals: int  #: heartbeats that renewed this process's leases
    leases_lost: int  #: leases found gone at a heartbeat (the job was handed to another)
    stale_acks: int  #: acknowledgements ignored because their lease token was stale
    outages: int  #: times a heartbeat started failing


# -- the shared state of one TASKS entry ---------------------------------------------------------


#: A queued acknowledgement: (queue, job id, KEYS and ARGV of the MOVE script).
_Ack = tuple[str, str, tuple[Any, ...]]


class _LoopPart:
    """The asyncio clients of one event loop, its heartbeat task, and the acknowledgements
    its jobs made in this turn of the loop (sent together: see ``RedisTaskBackend._ack``)."""

    def __init__(self, topology: Topology) -> None:
        self.connections = topology.connect()
        self.heartbeat: asyncio.Task[None] | None = None
        self.closer: AsyncGenerator[None, None] | None = None
        self.starter: asyncio.Task[None] | None = None
        self.acks: list[_Ack] = []
        self.send_acks: Callable[[_LoopPart], None] | None = None
        #: One task per queue popping wake tokens while ``waiting`` (some claim waits).
        self.listeners: dict[str, asyncio.Future[None]] = {}
        self.waiting = asyncio.Event()
        self.woken = asyncio.Event()
        self.waiters = 0

    async def aclose(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        for listener in self.listeners.values():
            listener.cancel()
        if self.acks and self.send_acks is not None:
            self.send_acks(self)  # the loop is closing: now or never
        await self.connections.aclose()


async def _close_with_loop(part: _LoopPart) -> AsyncGenerator[None, None]:
    """Started on the loop: the loop's ``shutdown_asyncgens()`` closes ``part``."""
    try:
        yield
    finally:
        await part.aclose()


class _Store:
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
        self.loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPart] = (
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
                    self._clients = _sync_clients(self.topology, self.settings)
        return self._clients

    def client_index(self, queue: str) -> int:
        topology = self.topology
        return topology.client_of[topology.shard_of(queue)]

    def remember(self, job_id: str, queue: str) -> None:
        if len(self.queue_of) > 100_000:
            self.queue_of.clear()
        self.queue_of[job_id] = queue


def _sync_clients(topology: Topology, settings: RedisTaskSettings) -> list[Any]:
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


_stores: dict[tuple[str, int], tuple[Mapping[str, Any], _Store]] = {}
_stores_lock = threading.Lock()


def _forget_stores(*, setting: str, **kwargs: Any) -> None:
    if setting in ("TASKS", "CHANNEL_LAYERS"):
        with _stores_lock:
            _stores.clear()


setting_changed.connect(_forget_stores)


def _never_sent(error: BaseException) -> bool:
    """True when a command failed before reaching Redis (so sending it again cannot double it)."""
    if isinstance(error, ReadOnlyError):
        return True
    text = str(error).lower()
    return isinstance(error, RedisConnectionError | OSError) and any(
        sign in text for sign in ("connecting to", "connection refused", "loading", "reset")
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(flat: Sequence[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _number(fields: Mapping[str, str], name: str) -> float | None:
    value = fields.get(name)
    return float(value) if value else None


def _job_from(job_id: str, fields: Mapping[str, str]) -> Job:
    """A :class:`Job` from a ``job:<id>`` hash (see :data:`.layout.JOB_FIELDS`)."""
    spec = json.loads(fields["spec"])
    workers = fields.get("workers", "")
    result = fields.get("result")
    progress = fields.get("progress")
    return Job(
        id=job_id,
        task_path=spec["task_path"],
        args=spec["args"],
        kwargs=spec["kwargs"],
        queue=spec["queue"],
        priority=spec["priority"],
        backend=spec["backend"],
        state=JobState(fields["state"]),
        enqueued_at=float(fields["enq"]),
        due_at=float(fields.get("due") or fields["enq"]),
        expires_at=_number(fields, "exp"),
        started_at=_number(fields, "started"),
        finished_at=_number(fields, "finished"),
        last_attempted_at=_number(fields, "last"),
        worker_ids=tuple(workers.split("\n")) if workers else (),
        errors=tuple(JobError(**error) for error in json.loads(fields.get("errors") or "[]")),
        return_value=json.loads(result) if result else None,
        retries=int(fields.get("retries") or 0),
        key=spec.get("key"),
        owner=spec.get("owner"),
        progress=json.loads(progress) if progress else None,
        cancel_requested=fields.get("cancel") == "1",
        result_expires_at=_number(fields, "rexp"),
        options=spec.get("options") or {},
    )


def _encode_changes(changes: Mapping[str, Any], now: float) -> tuple[list[str], float]:
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
        elif name == "return_value":
            pairs += ["result", json.dumps(value)]
        elif name == "retries":
            pairs += ["retries", str(int(value))]
        elif name == "due_at":
            delay = max(0.0, float(value) - now)
        elif name == "progress":
            pairs += ["progress", json.dumps(value)]
        elif name == "cancel_requested":
            pairs += ["cancel", "1" if value else "0"]
        else:
            raise TypeError(f"the Redis task store cannot change a job's {name!r}")
    return pairs, delay


class RedisTaskBackend(HeadraceTaskBackend):
    """Jobs in Redis, run at least once (see the module docstring)."""

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        all_options = dict(params.get("OPTIONS") or {})
        core = {k: v for k, v in all_options.items() if k not in _OWN_OPTIONS}
        super().__init__(alias, {**params, "OPTIONS": core})
        self.options = all_options
        #: Only a clock given in OPTIONS (tests) replaces the Redis server's clock.
        self._now_from_clock = "clock" in all_options
        self._settings_problems: list[str] = []
        try:
            settings = RedisTaskSettings.from_options(alias, all_options)
        except ConfigurationError as error:
            self._settings_problems = list(error.problems or [str(error)])
            settings = RedisTaskSettings()
        for queue in self.queues:
            try:
                check_queue_name(queue)
            except ConfigurationError as error:
                self._settings_problems.append(f"TASKS[{alias!r}]['QUEUES']: {error}")
        if self._settings_problems:
            raise ConfigurationError(
                "; ".join(self._settings_problems), problems=self._settings_problems
            )
        self.settings = settings
        with _stores_lock:
            found = _stores.get((alias, id(params)))
            if found is None:
                found = _stores[alias, id(params)] = (params, _Store(settings))
        self._store = found[1]

    # -- calling Redis ---------------------------------------------------------------------------

    def _now(self) -> str:
        return repr(self.clock.time()) if self._now_from_clock else ""

    def _local_now(self) -> float:
        return self.clock.time()

    def _sync(self, queue: str, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` for ``queue``; retried while Redis cannot be reached (the command
        never left), up to ``connect_timeout``; then :class:`TaskStoreUnavailable`."""
        self._send_acks_first()
        client = self._store.clients()[self._store.client_index(queue)]
        deadline = time.monotonic() + self.settings.connect_timeout
        attempt = 0
        while True:
            try:
                try:
                    return client.evalsha(script.sha, len(keys), *keys, *args)
                except NoScriptError:
                    return client.eval(script.source, len(keys), *keys, *args)
            except (*_CONNECTION_ERRORS, ReadOnlyError) as error:
                # A replica's refusal (a Sentinel fail-over under way) wrote nothing either.
                if not _never_sent(error) or time.monotonic() >= deadline:
                    raise TaskStoreUnavailable(
                        f"Redis for task queue {queue!r} cannot be reached ({error}); "
                        f"the {script.name} was not done"
                    ) from error
                pause = pause_for(attempt, first=0.02, cap=0.5, jitter=0.1, rand=0.5)
                attempt += 1
                if attempt == 1:
                    logger.warning(
                        "Redis for task queue %r unreachable (%s); retrying", queue, error
                    )
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))

    async def _async(
        self, part: _LoopPart, queue: str, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        client = part.connections.clients[self._store.client_index(queue)]
        try:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await client.eval(script.source, len(keys), *keys, *args)
        except _CONNECTION_ERRORS as error:
            raise TaskStoreUnavailable(
                f"Redis for task queue {queue!r} cannot be reached ({error})"
            ) from error

    def _loop_part(self) -> _LoopPart:
        loop = asyncio.get_running_loop()
        part = self._store.loops.get(loop)
        if part is None:
            part = self._store.loops[loop] = _LoopPart(self._store.topology)
            part.closer = _close_with_loop(part)
            part.starter = loop.create_task(_start(part.closer))
        return part

    # -- the task of a stored job ---------------------------------------------------------------

    def task_for_job(self, job: Job) -> Any:
        """The job's task as it was enqueued: its ``using()`` changes (priority, queue,
        options) travel with the job, since another process resolves the task by its path."""
        base = self.resolve_task(job.task_path)
        changes = {
            name: value
            for name, value in job.options.items()
            if getattr(base, name, value) != value
        }
        if job.priority != base.priority:
            changes["priority"] = job.priority
        if job.queue != base.queue_name:
            changes["queue_name"] = job.queue
        if not changes:
            return base
        try:
            return base.using(**changes)
        except (TypeError, ValueError) as error:  # a Django task without Celery options
            logger.debug("task %s: stored options not applied (%s)", job.id, error)
            return base

    def to_result(self, job: Job, task: Any = None) -> Any:
        if task is None:
            try:
                task = self.task_for_job(job)
            except UnknownTask:
                task = None
        return super().to_result(job, task)

    # -- store -------------------------------------------------------------------------------------

    def put_job(self, job: Job, task: Any = None) -> tuple[Job, bool]:
        keys = self._store.queue_keys(job.queue)
        delay = max(0.0, job.due_at - job.enqueued_at)
        expires_in = None if job.expires_at is None else job.expires_at - job.enqueued_at
        spec = json.dumps(
            {
                "task_path": job.task_path,
                "args": job.args,
                "kwargs": job.kwargs,
                "queue": job.queue,
                "priority": job.priority,
                "backend": job.backend,
                "key": job.key,
                "owner": job.owner,
                "options": dict(job.options),
            }
        )
        job_key = keys.job(job.id)
        reply = self._sync(
            job.queue,
            ENQUEUE,
            (*keys.common, job_key, keys.key(job.key) if job.key is not None else job_key),
            (
                self._now(),
                keys.base,
                job.id,
                spec,
                job.priority,
                repr(delay),
                "" if expires_in is None else repr(expires_in),
                "1" if job.key is not None else "0",
                repr(self.result_ttl(job)),
            ),
        )
        self._store.remember(job.id, job.queue)
        if int(reply[0]) == 1:
            now = float(_text(reply[2]))
            return job.evolve(
                enqueued_at=now,
                due_at=now + delay,
                expires_at=None if expires_in is None else now + expires_in,
            ), True
        existing = self.get_job(_text(reply[1]))
        if existing is None:  # it finished and expired in between: store ours
            return self.put_job(job, task)
        return existing, False

    def _find(self, job_id: str) -> tuple[str, dict[str, str]] | None:
        if not isinstance(job_id, str) or not 0 < len(job_id) <= 80:
            return None
        if not _ID_CHARS.issuperset(job_id):
            return None
        store = self._store
        self._send_acks_first()
        known = store.queue_of.get(job_id)
        queues = [known] if known is not None else []
        queues += [q for q in self.queues if q != known]
        for queue in queues:
            client = store.clients()[store.client_index(queue)]
            try:
                flat = client.execute_command("HGETALL", store.queue_keys(queue).job(job_id))
            except _CONNECTION_ERRORS as error:
                raise TaskStoreUnavailable(f"Redis cannot be reached ({error})") from error
            fields = flat if isinstance(flat, dict) else _fields(flat)
            if fields:
                fields = {_text(k): _text(v) for k, v in fields.items()}
                if self._now_from_clock:
                    expiry = _number(fields, "rexp")
                    if expiry is not None and expiry <= self.clock.time():
                        return None
                store.remember(job_id, queue)
                return queue, fields
        return None

    def get_job(self, job_id: str) -> Job | None:
        found = self._find(job_id)  # sends this loop turn's acknowledgements first
        return None if found is None else _job_from(job_id, found[1])

    def _claim_reply(self, queue: str, reply: Any) -> tuple[list[Job], float | None, list[str]]:
        expired = [_text(i) for i in reply[2]]
        if int(reply[0]) == 1:
            store = self._store
            taken = reply[1]
            jobs: list[Job] = []
            for index in range(0, len(taken), 2):
                fields = _fields(taken[index + 1])
                job = _job_from(fields["id"], fields)
                store.leases[job.id] = (queue, _text(taken[index]))
                store.claimed[job.id] = job
                store.remember(job.id, queue)
                jobs.append(job)
            return jobs, None, expired
        wait = _text(reply[1])
        return [], (float(wait) if wait else None), expired

    def _claim_args(self, keys: QueueKeys, worker_id: str, count: int = 1) -> tuple[Any, ...]:
        s = self.settings
        return (self._now(), keys.base, worker_id, repr(s.lease), s.max_deliveries, count)

    def _announce_expired(self, queue: str, ids: list[str]) -> None:
        for job_id in ids:
            job = self.get_job(job_id)
            if job is not None:
                self._finished_here(job)
                self.announce_finished(job)

    def _ordered(self, queues: Iterable[str]) -> list[str]:
        names = list(dict.fromkeys(queues))
        if len(names) > 1:  # take turns, so one busy queue cannot starve the others
            start = next(self._store.rotation) % len(names)
            names = names[start:] + names[:start]
        return names

    def claim_nowait(self, queues: Iterable[str], worker_id: str) -> Job | None:
        for queue in self._ordered(queues):
            keys = self._store.queue_keys(queue)
            reply = self._sync(queue, CLAIM, keys.common, self._claim_args(keys, worker_id))
            jobs, _, expired = self._claim_reply(queue, reply)
            self._announce_expired(queue, expired)
            if jobs:
                self._ensure_heartbeat()
                return jobs[0]
        return None

    async def claim(
        self,
        queues: Iterable[str],
        worker_id: str,
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> Job:
        part = self._loop_part()
        names = list(dict.fromkeys(queues))
        while True:
            part.woken.clear()  # a token from here on wakes the wait below
            waits: list[float] = []
            for queue in self._ordered(names):
                keys = self._store.queue_keys(queue)
                reply = await self._async(
                    part, queue, CLAIM, keys.common, self._claim_args(keys, worker_id)
                )
                jobs, wait, expired = self._claim_reply(queue, reply)
                self._announce_expired(queue, expired)
                if jobs:
                    self._ensure_heartbeat()
                    return jobs[0]
                if wait is not None:
                    waits.append(wait)
            if on_wait is not None:
                on_wait()
            await self._wait_for_work(part, names, min(waits) if waits else None)

    async def claim_more(self, queues: Iterable[str], worker_id: str, limit: int) -> list[Job]:
        """Up to ``limit`` more jobs due now, in one script call per queue, without waiting:
        a worker that just claimed a job asks for as many as it has free slots left (never
        more, so nothing is hoarded)."""
        part = self._loop_part()
        found: list[Job] = []
        for queue in self._ordered(queues):
            if len(found) >= limit:
                break
            keys = self._store.queue_keys(queue)
            args = self._claim_args(keys, worker_id, limit - len(found))
            reply = await self._async(part, queue, CLAIM, keys.common, args)
            jobs, _, expired = self._claim_reply(queue, reply)
            self._announce_expired(queue, expired)
            found += jobs
        return found

    async def _wait_for_work(self, part: _LoopPart, queues: list[str], due: float | None) -> None:
        """Block until an enqueue pushes a wake token, ``due`` seconds pass (a delayed job or
        a lease falls due) or ``block_timeout`` passes."""
        for queue in queues:
            listener = part.listeners.get(queue)
            if listener is None or listener.done():
                part.listeners[queue] = asyncio.ensure_future(self._listen(part, queue))
        loop = asyncio.get_running_loop()
        timed_out: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not timed_out.done():
                timed_out.set_result(None)

        # A due time is on the backend's clock (a test's manual one); the periodic re-check
        # after block_timeout is real time.
        timer = None if due is None else self.clock.call_at(self.clock.time() + due, wake)
        woken: asyncio.Future[Any] = asyncio.ensure_future(part.woken.wait())
        part.waiters += 1
        part.waiting.set()
        try:
            await asyncio.wait(
                [woken, timed_out],
                timeout=self.settings.block_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            part.waiters -= 1
            if not part.waiters:
                part.waiting.clear()
            if timer is not None:
                timer.cancel()
            woken.cancel()

    async def _listen(self, part: _LoopPart, queue: str) -> None:
        """Pop the queue's wake tokens while a claim of this loop waits (one blocking
        connection per queue, kept open: cancelling a pop would cost a reconnect). A token
        that comes when nobody here waits any more is pushed back for another worker."""
        client = part.connections.clients[self._store.client_index(queue)]
        key = self._store.queue_keys(queue).wake
        backoff = Backoff(f"waiting for task queue {queue!r} on Redis", logger=logger)
        while True:
            await part.waiting.wait()
            try:
                token = await client.blpop([key], timeout=self.settings.block_timeout)
                if token is not None and not part.waiting.is_set():
                    await client.lpush(key, b"1")  # hand it on: this loop is busy now
            except _CONNECTION_ERRORS as error:
                part.woken.set()  # the waiting claim meets the outage and backs off
                await backoff.failed(error)
                continue
            backoff.succeeded()
            if token is not None:
                part.woken.set()

    def claim_job(self, job_id: str, worker_id: str) -> Job | None:
        found = self._find(job_id)
        if found is None:
            return None
        queue, _ = found
        keys = self._store.queue_keys(queue)
        reply = self._sync(
            queue,
            CLAIM_ONE,
            (*keys.common, keys.job(job_id)),
            (self._now(), keys.base, job_id, worker_id, repr(self.settings.lease)),
        )
        if int(reply[0]) != 1:
            return None
        self._store.leases[job_id] = (queue, _text(reply[1]))
        return _job_from(job_id, _fields(reply[2]))

    def move_job(self, job_id: str, move: Any, **changes: Any) -> Job:
        store = self._store
        found_lease = store.leases.get(job_id)
        if found_lease is not None:
            queue, token = found_lease
            if move in (Move.SUCCEED, Move.FAIL) and job_id in store.claimed:
                part = self._running_part()
                if part is not None:
                    return self._ack(part, job_id, queue, token, move, changes)
        else:
            found = self._find(job_id)
            if found is None:
                raise TaskResultDoesNotExist(job_id)
            queue, token = found[0], ""
        keys = store.queue_keys(queue)
        pairs, delay = _encode_changes(changes, self._local_now())
        reply = self._sync(
            queue,
            MOVE,
            (*keys.common, keys.job(job_id)),
            (
                self._now(),
                keys.base,
                job_id,
                move.value,
                token,
                repr(delay),
                repr(self.settings.lease),
                self.worker_id,
                *pairs,
            ),
        )
        code = int(reply[0])
        if code == -1:
            raise TaskResultDoesNotExist(job_id)
        if code == -2:
            advance(JobState(_text(reply[1])), move)  # raises InvalidTransition
            raise AssertionError("unreachable")
        if code == -3:
            store.leases.pop(job_id, None)
            store.claimed.pop(job_id, None)
            store.gone.discard(job_id)
            store.stale_acks += 1
            raise LeaseLost(
                f"task {job_id}: '{move.value}' ignored: this worker's lease lapsed and the job "
                f"was handed on (it is {_text(reply[1])} now)"
            )
        job = _job_from(job_id, _fields(reply[1]))
        store.gone.discard(job_id)
        if job.state is JobState.RUNNING:
            store.leases[job_id] = (queue, _text(reply[2]))
            store.claimed[job_id] = job
        else:
            store.leases.pop(job_id, None)
            store.claimed.pop(job_id, None)
        if job.is_finished:
            self._finished_here(job)
        return job

    def _running_part(self) -> _LoopPart | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return self._store.loops.get(loop)

    def _ack(
        self,
        part: _LoopPart,
        job_id: str,
        queue: str,
        token: str,
        move: Move,
        changes: Mapping[str, Any],
    ) -> Job:
        """Settle a job this worker holds, its acknowledgement sent with the others of this
        loop turn at the end of the turn (one round trip for many jobs; any store call made
        before then sends them first). The job as it now is comes back at once; a stale
        token is logged and counted when the reply comes (``stale_acks``), not raised."""
        store = self._store
        claimed = store.claimed.pop(job_id)
        store.leases.pop(job_id, None)
        store.gone.discard(job_id)
        keys = store.queue_keys(queue)
        pairs, _ = _encode_changes(changes, self._local_now())
        now = self._local_now()
        local = claimed.evolve(
            state=advance(claimed.state, move),
            finished_at=now,
            result_expires_at=now + self.result_ttl(claimed),
            **changes,
        )
        command = (
            *keys.common,
            keys.job(job_id),
            self._now(),
            keys.base,
            job_id,
            move.value,
            token,
            "0",
            repr(self.settings.lease),
            self.worker_id,
            *pairs,
        )
        part.acks.append((queue, job_id, command))
        if len(part.acks) == 1:
            part.send_acks = self._send_acks
            asyncio.get_running_loop().call_soon(self._send_acks, part)
        self._finished_here(local)
        return local

    def _send_acks(self, part: _LoopPart) -> None:
        """Send the acknowledgements queued in this loop turn, one pipeline per server (a
        callback at the end of the turn; any store call before it sends them first, so
        everything this process does reaches Redis in order). A connection failure is logged
        once per outage and retried after a pause; the jobs' leases keep them safe meanwhile
        (were this process to die first, they would run again elsewhere)."""
        store = self._store
        batch, part.acks = part.acks, []
        if not batch:
            return
        try:
            replies = self._pipeline(batch)
        except (RedisError, OSError) as error:
            part.acks[:0] = batch
            backoff = store.ack_backoff
            if not backoff.failing:
                logger.warning("%s failed (%s); retrying", backoff.what, error)
                backoff.outages += 1
            backoff.failing = True
            backoff.failures += 1
            pause = backoff.next_pause()
            asyncio.get_running_loop().call_later(pause, self._send_acks, part)
            return
        store.ack_backoff.succeeded()
        for (_queue, job_id, _), reply in zip(batch, replies, strict=True):
            code = int(reply[0]) if not isinstance(reply, Exception) else None
            if code == -3:
                store.stale_acks += 1
                logger.warning(
                    "task %s: this worker's result was ignored: its lease lapsed and the job "
                    "was handed on (it is %s now)",
                    job_id,
                    _text(reply[1]),
                )
            elif code != 1:
                logger.error("acknowledging task %s failed: %r", job_id, reply)

    def _pipeline(self, batch: list[_Ack]) -> list[Any]:
        by_client: dict[int, list[int]] = {}
        for index, (queue, _, _) in enumerate(batch):
            by_client.setdefault(self._store.client_index(queue), []).append(index)
        replies: list[Any] = [None] * len(batch)
        nkeys = 8  # the seven keys every moving script takes, and the job's
        clients = self._store.clients()
        for client_index, indexes in by_client.items():
            client = clients[client_index]
            results: list[Any] = []
            for attempt in range(2):
                if self.settings.cluster:  # a cluster client pipelines no scripts
                    results = []
                    for index in indexes:
                        try:
                            results.append(client.evalsha(MOVE.sha, nkeys, *batch[index][2]))
                        except NoScriptError as error:
                            results.append(error)
                else:
                    pipe = client.pipeline(transaction=False)
                    for index in indexes:
                        pipe.evalsha(MOVE.sha, nkeys, *batch[index][2])
                    results = pipe.execute(raise_on_error=False)
                if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                    client.script_load(MOVE.source)
                    continue
                break
            for index, result in zip(indexes, results, strict=True):
                if isinstance(result, _CONNECTION_ERRORS):
                    raise result
                replies[index] = result
        return replies

    def _send_acks_first(self) -> None:
        """Before another store call from the worker's loop: send this turn's acks."""
        part = self._running_part()
        if part is not None and part.acks:
            self._send_acks(part)

    def _finished_here(self, job: Job) -> None:
        for callback in self._store.finish_waiters.pop(job.id, []):
            callback()

    def request_cancel(self, job_id: str) -> Job | None:
        found = self._find(job_id)
        if found is None:
            return None
        queue, fields = found
        if JobState(fields["state"]).is_finished:
            return _job_from(job_id, fields)
        keys = self._store.queue_keys(queue)
        reply = self._sync(
            queue, CANCEL, (*keys.common, keys.job(job_id)), (self._now(), keys.base, job_id)
        )
        if int(reply[0]) != 1:
            return None
        job = _job_from(job_id, _fields(reply[1]))
        if job.is_finished:
            self._finished_here(job)
        elif job.state is JobState.RUNNING:
            watcher = self._store.watchers.get(job_id)
            if watcher is not None:
                watcher()
        return job

    def watch_job(self, job_id: str, on_cancel: Callable[[], None]) -> None:
        self._store.watchers[job_id] = on_cancel

    def unwatch_job(self, job_id: str) -> None:
        self._store.watchers.pop(job_id, None)

    def set_progress(self, job_id: str, value: Mapping[str, Any]) -> None:
        queue = self._store.queue_of.get(job_id)
        if queue is None:
            found = self._find(job_id)
            if found is None:
                return
            queue = found[0]
        key = self._store.queue_keys(queue).job(job_id)
        self._sync(queue, PROGRESS, (key,), (json.dumps(dict(value)),))

    async def wait_finished(self, job_id: str, timeout: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.005
        while True:
            job = self.get_job(job_id)
            if job is None:
                raise TaskResultDoesNotExist(job_id)
            if job.is_finished:
                return
            future: asyncio.Future[None] = loop.create_future()

            def done(future: asyncio.Future[None] = future) -> None:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_resolve, future)

            self._store.finish_waiters.setdefault(job_id, []).append(done)
            wait = pause if deadline is None else min(pause, deadline - loop.time())
            if wait <= 0:
                raise TimeoutError(f"task {job_id} did not finish within {timeout} s")
            try:
                await asyncio.wait_for(asyncio.shield(future), wait)
            except TimeoutError:
                pass
            finally:
                waiters = self._store.finish_waiters.get(job_id)
                if waiters is not None and done in waiters:
                    waiters.remove(done)
            pause = min(pause * 2, 0.25)

    def wait_finished_sync(self, job_id: str, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            job = self.get_job(job_id)
            if job is None:
                raise TaskResultDoesNotExist(job_id)
            if job.is_finished:
                return
            event = threading.Event()
            self._store.finish_waiters.setdefault(job_id, []).append(event.set)
            wait = pause if deadline is None else min(pause, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"task {job_id} did not finish within {timeout} s")
            event.wait(wait)
            waiters = self._store.finish_waiters.get(job_id)
            if waiters is not None and event.set in waiters:
                waiters.remove(event.set)
            pause = min(pause * 2, 0.25)

    def ready_count(self, queues: Iterable[str]) -> int:
        total = 0
        now = self._local_now()
        for queue in queues:
            keys = self._store.queue_keys(queue)
            client = self._store.clients()[self._store.client_index(queue)]
            try:
                total += int(client.zcard(keys.ready))
                total += int(client.zcount(keys.delayed, "-inf", now))
            except _CONNECTION_ERRORS as error:
                raise TaskStoreUnavailable(f"Redis cannot be reached ({error})") from error
        return total

    # -- heartbeat -------------------------------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # eager mode, no loop: nothing to renew from
        part = self._loop_part()
        if part.heartbeat is None or part.heartbeat.done():
            part.heartbeat = loop.create_task(self._heartbeat(part))

    async def _heartbeat(self, part: _LoopPart) -> None:
        """Renew this process's leases until it holds none; learn of cancellations."""
        store = self._store
        backoff = store.heartbeat_backoff
        while len(store.leases) > len(store.gone):
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await self.renew_leases(part)
            except (RedisError, HeadraceError, OSError) as error:
                await backoff.failed(error)
                continue
            backoff.succeeded()

    async def renew_leases(self, part: _LoopPart | None = None) -> None:
        """Push every lease this process holds forward by ``lease`` (one call per queue)."""
        store = self._store
        if part is None:
            part = self._loop_part()
        by_queue: dict[str, list[str]] = {}
        for job_id, (queue, token) in list(store.leases.items()):
            if job_id not in store.gone:
                by_queue.setdefault(queue, []).extend((job_id, token))
        for queue, pairs in by_queue.items():
            keys = store.queue_keys(queue)
            reply = await self._async(
                part,
                queue,
                RENEW,
                (keys.leases, keys.stats),
                (self._now(), keys.base, repr(self.settings.lease), *pairs),
            )
            store.renewals += 1
            for job_id in map(_text, reply[0]):
                watcher = store.watchers.get(job_id)
                if watcher is not None:
                    watcher()
            for job_id in map(_text, reply[1]):
                if job_id in store.leases and job_id not in store.gone:
                    store.gone.add(job_id)
                    store.leases_lost += 1
                    logger.warning(
                        "the lease of task %s lapsed while this worker ran it (paused or cut "
                        "off for longer than %g s); another worker may run it again",
                        job_id,
                        self.settings.lease,
                    )

    # -- checks and introspection ----------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages = super().check(**kwargs)
        messages.extend(self._persistence_check())
        return messages

    def _persistence_check(self) -> list[checks.CheckMessage]:
        """Warn when a reachable Redis keeps nothing on disk (asked once, 0.5 s at most; an
        unreachable server or a refused INFO says nothing here: runtime errors will)."""
        found: list[checks.CheckMessage] = []
        for index, client in enumerate(self._store.clients()):
            try:
                info = client.info("persistence")
                config = client.config_get("save") if not info.get("aof_enabled") else {}
            except Exception as error:  # unreachable, or CONFIG refused by an ACL
                logger.debug("persistence check of TASKS[%r] skipped: %s", self.alias, error)
                continue
            if not info.get("aof_enabled") and not _text(config.get("save", "")).strip():
                found.append(
                    checks.Warning(
                        f"TASKS[{self.alias!r}]: Redis server {index} runs without persistence "
                        "(no AOF, no RDB snapshots): a restart loses every queued job and result",
                        hint="Turn on appendonly (appendfsync everysec) for durable tasks.",
                        id="headrace.W110",
                    )
                )
        return found

    def statistics(self) -> RedisTaskStatistics:
        store = self._store
        return RedisTaskStatistics(
            leases_held=len(store.leases) - len(store.gone),
            renewals=store.renewals,
            leases_lost=store.leases_lost,
            stale_acks=store.stale_acks,
            outages=store.heartbeat_backoff.outages,
        )

    def queue_statistics(self, queue: str) -> QueueStatistics:
        """The queue's counts and counters as Redis holds them."""
        keys = self._store.queue_keys(queue)
        client = self._store.clients()[self._store.client_index(queue)]
        pipe = client.pipeline(transaction=False)
        pipe.zcard(keys.ready)
        pipe.zcard(keys.delayed)
        pipe.zcard(keys.leases)
        pipe.zcard(keys.dead)
        pipe.zcount(keys.done, self._local_now() if self._now_from_clock else time.time(), "+inf")
        pipe.hgetall(keys.stats)
        ready, delayed, running, dead, finished, raw = pipe.execute()
        counters = {_text(k): int(v) for k, v in raw.items()}
        return QueueStatistics(
            queue=queue,
            ready=ready,
            delayed=delayed,
            running=running,
            dead=dead,
            finished=finished,
            counters={name: counters.get(name, 0) for name in _COUNTERS},
        )

    def job_ids(self, queue: str, state: str) -> list[str]:
        """Ids of ``queue``'s jobs in ``state``: ready, delayed, running, dead or finished."""
        keys = self._store.queue_keys(queue)
        client = self._store.clients()[self._store.client_index(queue)]
        key = {
            "ready": keys.ready,
            "delayed": keys.delayed,
            "running": keys.leases,
            "dead": keys.dead,
            "finished": keys.done,
        }.get(state)
        if key is None:
            raise ValueError(
                f"state must be ready, delayed, running, dead or finished, got {state!r}"
            )
        return [_text(i) for i in client.zrange(key, 0, -1)]

    def retry_dead(self, job_id: str) -> str:
        """Enqueue a dead letter again as a new job (same task, arguments and options);
        the dead one leaves the dead set. Returns the new job's id."""
        from headrace.tasks.backends.base import new_job_id

        found = self._find(job_id)
        if found is None:
            raise TaskResultDoesNotExist(job_id)
        queue, fields = found
        keys = self._store.queue_keys(queue)
        client = self._store.clients()[self._store.client_index(queue)]
        if client.zscore(keys.dead, job_id) is None:
            raise ValueError(f"task {job_id} is not a dead letter")
        old = _job_from(job_id, fields)
        now = self._local_now()
        fresh = old.evolve(
            id=new_job_id(),
            state=JobState.READY,
            enqueued_at=now,
            due_at=now,
            expires_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            worker_ids=(),
            errors=(),
            return_value=None,
            retries=0,
            progress=None,
            cancel_requested=False,
            result_expires_at=None,
        )
        stored, _ = self.put_job(fresh)
        client.zrem(keys.dead, job_id)
        client.pexpire(keys.job(job_id), int(self.result_ttl(old) * 1000))
        return stored.id

    def purge(self, queue: str) -> int:
        """Delete every job of ``queue`` (waiting, running, dead and finished); returns how
        many job hashes were deleted. Running jobs' acknowledgements become stale."""
        keys = self._store.queue_keys(queue)
        client = self._store.clients()[self._store.client_index(queue)]
        deleted = 0
        for state in ("ready", "delayed", "running", "dead", "finished"):
            for job_id in self.job_ids(queue, state):
                deleted += int(client.delete(keys.job(job_id)))
        client.delete(keys.ready, keys.delayed, keys.leases, keys.dead, keys.done, keys.wake)
        cursor = 0
        while True:
            cursor, found = client.scan(cursor, match=keys.base + "key:*", count=500)
            if found:
                client.delete(*found)
            if not cursor:
                break
        return deleted

    def flush(self) -> None:
        """Delete every key of every queue of this backend (tests)."""
        for queue in self.queues:
            self.purge(queue)
            keys = self._store.queue_keys(queue)
            self._store.clients()[self._store.client_index(queue)].delete(keys.stats)


async def _start(generator: AsyncGenerator[None, None]) -> None:
    await anext(generator)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
