"""Per-event-loop plumbing of the Redis layer: pipelined commands and the loop's state.

redis-py's asyncio connections belong to the loop that opened them, so each event loop that
uses a layer gets a :class:`LoopState`: its clients, one :class:`Batcher` per server, the
readers waiting in that loop and the pumps feeding them. The state registers itself with the
loop's async-generator hooks, so the loop's shutdown (``asyncio.run``, ``async_to_sync``)
closes its connections and tasks.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Hashable
from typing import Any, Final

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from headrace.exceptions import ChannelLayerError, LayerConnectionError
from headrace.layers.clock import TimerHandle
from headrace.layers.groups import Membership
from headrace.layers.handoff import Handoff, Wakeups
from headrace.layers.redis.handover import HandOverLedger
from headrace.layers.redis.layout import ORIGIN_SIZE
from headrace.layers.redis.scripts import SCRIPTS
from headrace.layers.redis.topology import Connections

__all__ = [
    "CONNECTION_ERRORS",
    "Batcher",
    "Command",
    "Link",
    "LoopState",
    "Message",
    "close_with_loop",
    "never_sent",
    "raise_first",
    "translate",
]

logger = logging.getLogger("headrace.layers.redis")

Message = dict[str, Any]
Command = tuple[Any, ...]

CONNECTION_ERRORS: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    ClusterDownError,
    OSError,
)


class Link:
    """A connection of its own to one server, for one batcher or one reader.

    Through redis-py's connection API (which connects, speaks TLS, authenticates and asks
    Sentinel for the master) but not its client layer: no pool checkout, retry wrapper or
    reply callbacks per command, which halves the client's cost of a round trip. A Redis
    Cluster client has no single connection: there the client runs the commands.
    """

    __slots__ = ("client", "connection")

    def __init__(self, client: Any) -> None:
        self.client = client
        pool = getattr(client, "connection_pool", None)
        self.connection: Any = None if pool is None else pool.make_connection()

    async def execute(self, commands: list[Command]) -> list[Any]:
        """Run ``commands`` in one write; their results, error replies included."""
        connection = self.connection
        if connection is None:
            return await self._execute_on_client(commands)
        # The connection reconnects by itself when needed, and drops itself on any failure
        # (or cancellation) half-way, so it is never left with replies unread.
        await connection.send_packed_command(
            connection.pack_commands(commands) if len(commands) > 1 else
            connection.pack_command(*commands[0]),
            check_health=False,
        )  # fmt: skip
        results: list[Any] = []
        for _ in commands:
            try:
                results.append(await connection.read_response())
            except ResponseError as error:
                results.append(error)
        return results

    async def load_scripts(self) -> None:
        """Load the layer's scripts where this link's commands go (every node of a cluster;
        after a Sentinel fail-over, the new master)."""
        if self.connection is None:
            for script in SCRIPTS:
                await self.client.script_load(script.source)
        else:
            raise_first(await self.execute([("SCRIPT", "LOAD", s.source) for s in SCRIPTS]))

    async def _execute_on_client(self, commands: list[Command]) -> list[Any]:
        if len(commands) == 1:
            try:
                return [await self.client.execute_command(*commands[0])]
            except ResponseError as error:
                return [error]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))

    async def aclose(self) -> None:
        if self.connection is not None:
            await self.connection.disconnect()


class _Merged:
    """One script call that collects the arguments of many callers (see Batcher.merge)."""

    __slots__ = ("args", "count", "head")

    def __init__(self, head: Command) -> None:
        self.head = head
        self.args: list[Any] = []
        self.count = 0

    def command(self) -> Command:
        return (*self.head, *self.args)


_Item = tuple[tuple[Command, ...] | _Merged, "asyncio.Future[list[Any]] | None"]


class Batcher:
    """Sends every command queued in one event-loop turn to one server as one pipeline.

    Batches go out one after another on one connection, so commands reach Redis in the order
    they were issued, and a burst of callers needs one connection, not one each. When nothing
    is in flight, :meth:`run` sends at once from the caller's task (no extra hop); whatever is
    issued meanwhile goes out as the next batch.

    :meth:`merge` goes further for the hot paths: calls of one script on one key that wait for
    the same batch become a single call carrying all their arguments, so a burst of sends to
    one channel costs Redis and the client one command, not one each.
    """

    __slots__ = ("busy", "client", "index", "layer", "link", "merging", "queue", "task")

    def __init__(self, layer: Any, client: Any, index: int) -> None:
        self.layer = layer
        self.client = client
        self.link = Link(client)
        self.index = index
        self.queue: list[_Item] = []
        # Merged calls of the queued batch still taking arguments, by key; any other command
        # queued after them closes them, so nothing overtakes a command issued before it.
        self.merging: dict[Hashable, tuple[_Merged, asyncio.Future[list[Any]]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.busy = False

    async def run(self, *commands: Command) -> list[Any]:
        """Send ``commands`` and return their results (exceptions included)."""
        if self.busy or self.task is not None:
            return await self.call(*commands)
        self.busy = True
        try:
            return await self._execute(list(commands))
        finally:
            self.busy = False
            if self.queue and self.task is None:
                self.task = asyncio.get_running_loop().create_task(self._run())

    def call(self, *commands: Command) -> asyncio.Future[list[Any]]:
        """Queue ``commands``; the future gets their results (exceptions included)."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue(commands, future)
        return future

    def call_nowait(self, *commands: Command) -> None:
        """Queue ``commands`` nobody waits for (failures are logged)."""
        self._queue(commands, None)

    async def merge(self, key: Hashable, head: Command, args: Command) -> tuple[Any, int]:
        """Run ``head + args``, merged with the calls of the same ``key`` in the next batch.

        Calls with the same ``key`` must share ``head`` (script, keys, common arguments);
        their ``args`` are appended in calling order. Returns the script's result (or the
        exception) and this caller's position among the merged callers.
        """
        if not self.busy and self.task is None:
            (result,) = await self.run((*head, *args))
            return result, 0
        open_call = self.merging.get(key)
        if open_call is None:
            merged = _Merged(head)
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self.queue.append((merged, future))
            self.merging[key] = open_call = (merged, future)
        merged, future = open_call
        merged.args += args
        position = merged.count
        merged.count += 1
        (result,) = await future
        return result, position

    def _queue(
        self,
        commands: tuple[Command, ...],
        future: asyncio.Future[list[Any]] | None,
    ) -> None:
        self.queue.append((commands, future))
        if self.merging:
            self.merging.clear()
        if self.task is None and not self.busy:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue, []
                self.merging.clear()
                commands_out: list[Command] = []
                for commands, _ in batch:
                    if isinstance(commands, _Merged):
                        commands_out.append(commands.command())
                    else:
                        commands_out += commands
                try:
                    results = await self._execute(commands_out)
                except BaseException as error:
                    failure = error
                    if isinstance(error, asyncio.CancelledError):
                        failure = LayerConnectionError("the Redis layer was closed mid-command")
                    for _, future in batch:
                        if future is not None and not future.done():
                            future.set_exception(failure)
                        elif future is None:
                            logger.warning("a background Redis command failed: %s", failure)
                    if isinstance(error, asyncio.CancelledError):
                        raise
                    continue
                offset = 0
                for commands, future in batch:
                    count = 1 if isinstance(commands, _Merged) else len(commands)
                    if future is not None and not future.done():
                        future.set_result(results[offset : offset + count])
                    offset += count
        finally:
            self.task = None

    async def _execute(self, commands: list[Command]) -> list[Any]:
        layer = self.layer
        deadline = time.monotonic() + layer.connect_timeout
        pause = 0.02
        reloaded = False
        while True:
            try:
                if not layer._scripts_loaded[self.index]:
                    await self.link.load_scripts()
                    layer._scripts_loaded[self.index] = True
                results = await self.link.execute(commands)
            except (AuthenticationError, AuthorizationError) as error:
                raise LayerConnectionError(
                    f"Redis ({layer._host_name(self.index)}) refused the credentials: {error}; "
                    "check the user and password in the host URL"
                ) from error
            except CONNECTION_ERRORS as error:
                layer._scripts_loaded[self.index] = False
                if not never_sent(error) or time.monotonic() >= deadline:
                    raise LayerConnectionError(
                        f"Redis ({layer._host_name(self.index)}) is unreachable: {error}"
                    ) from error
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
                continue
            if not reloaded and any(isinstance(result, NoScriptError) for result in results):
                # The server lost its scripts (restart or SCRIPT FLUSH): no script ran. Plain
                # commands in the batch are idempotent, so running the batch again is safe.
                layer._scripts_loaded[self.index] = False
                reloaded = True
                continue
            return results


def never_sent(error: BaseException) -> bool:
    """True when a command failed before reaching the server (so retrying cannot double it)."""
    text = str(error).lower()
    if "certificate" in text or "ssl" in text:
        return False  # a TLS failure will not go away by trying again
    return any(
        sign in text
        for sign in ("connecting to", "connection refused", "loading", "cannot be connected")
    )


class LoopState:
    """Everything of one layer that belongs to one event loop."""

    def __init__(self, layer: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: Connections = layer._topology.connect()
        self.batchers = [
            Batcher(layer, client, index) for index, client in enumerate(self.connections.clients)
        ]
        self.links: set[Link] = set()  # the readers' own connections
        self.waiters: dict[str, deque[Handoff[tuple[float, Message]]]] = {}
        self.ready_readers = Wakeups(loop)  # readers handed a message, woken together
        self.waiting: Counter[str] = Counter()  # per source (process name or normal channel)
        self.buffers: dict[str, deque[tuple[float, Message]]] = {}
        self.memberships: dict[str, Membership] = {}
        self.wakeups: dict[str, asyncio.Event] = {}
        self.wake_checks: set[str] = set()  # sources whose idle pump may need waking
        self.pumps: dict[tuple[str, int], asyncio.Task[None]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        # Whether a send may skip Redis (see handover.py); ``origin`` tags this loop's entries.
        self.handover = HandOverLedger(secrets.token_bytes(ORIGIN_SIZE))
        self.popping: dict[str, asyncio.Future[list[Any]]] = {}  # a pump's LPOP in flight
        self.timer: TimerHandle | None = None
        self.timer_due = 0.0
        self.moving = False  # a move of due delayed messages is in flight
        self.move_again = False  # a timer fired meanwhile: look again when it is done
        self.closed = False
        self.guard: AsyncGenerator[None, None] | None = None

    def spawn(self, coroutine: Any) -> None:
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("Redis layer background work failed: %s", task.exception())

    async def aclose(self) -> None:
        """Stop the pumps and timers, fail waiting readers, close the connections."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        running = [*self.pumps.values(), *self.tasks]
        for task in running:
            task.cancel()
        pending = [batcher.task for batcher in self.batchers if batcher.task is not None]
        for task in pending:
            running.append(task)
        await asyncio.gather(*running, return_exceptions=True)
        closed = LayerConnectionError("the Redis layer was closed while receive() was waiting")
        for waiters in self.waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(closed)
                    waiter.exception()  # mark retrieved: nobody may be left to see it
        self.waiters.clear()
        for link in [*self.links, *(batcher.link for batcher in self.batchers)]:
            await link.aclose()
        self.links.clear()
        await self.connections.aclose()


async def close_with_loop(state: LoopState) -> AsyncGenerator[None, None]:
    """Registered as an async generator of the loop, so loop shutdown closes the state."""
    try:
        yield
    finally:
        await state.aclose()


def raise_first(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, Exception):
            raise translate(result)


def translate(error: Exception) -> Exception:
    if isinstance(error, ChannelLayerError):
        return error
    if isinstance(error, CONNECTION_ERRORS):
        return LayerConnectionError(f"Redis connection failed: {error}")
    if isinstance(error, RedisError):
        return ChannelLayerError(f"Redis refused a channel layer command: {error}")
    return error
