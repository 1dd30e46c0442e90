"""Per-event-loop plumbing of the Redis layer: connections and pipelined commands.

redis-py's asyncio connections belong to the loop that opened them, so each event loop that
uses a layer gets its own :class:`LoopConnections`: its clients, one :class:`Batcher` per
server, the readers' own links and the loop's background tasks. The layer registers each with
the loop's async-generator hooks (:func:`close_with_loop`), so the loop's shutdown
(``asyncio.run``, ``async_to_sync``) closes its connections and tasks. What all loops share
about a server (its name, whether it has the scripts) is a :class:`Server`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Coroutine, Hashable, Iterable, Sequence
from typing import Any, Protocol

from redis.exceptions import AuthenticationError, AuthorizationError, NoScriptError

from headrace.backoff import Backoff
from headrace.exceptions import LayerConnectionError
from headrace.layers.clock import Clock
from headrace.layers.redis.scripts import Script
from headrace.layers.redis.topology import Connections, Topology
from headrace.layers.redis.wire import (
    CONNECTION_ERRORS,
    Command,
    Link,
    never_sent,
    safe_to_repeat,
    translate,
)

__all__ = [
    "Batcher",
    "LoopConnections",
    "Server",
    "close_with_loop",
    "forget_guard",
    "register_with_loop",
]

logger = logging.getLogger("headrace.layers.redis")


class Server:
    """One configured server (or cluster) as every event loop sees it."""

    __slots__ = ("name", "scripts_loaded")

    def __init__(self, name: str) -> None:
        self.name = name  #: for error messages
        self.scripts_loaded = False  #: cleared on a connection failure or a NOSCRIPT reply


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

    __slots__ = (
        "backoff",
        "busy",
        "client",
        "connect_timeout",
        "link",
        "merging",
        "queue",
        "server",
        "task",
    )

    def __init__(
        self, client: Any, server: Server, *, connect_timeout: float, clock: Clock
    ) -> None:
        self.client = client
        self.link = Link(client)
        self.server = server
        self.connect_timeout = connect_timeout
        #: Retries of a command that failed to connect, until ``connect_timeout``.
        self.backoff = Backoff(
            f"connecting to Redis ({server.name})", logger=logger, first=0.02, cap=0.5, clock=clock
        )
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
        server = self.server
        clock = self.backoff.clock
        deadline = clock.time() + self.connect_timeout
        reloaded = repeated = False
        while True:
            try:
                if not server.scripts_loaded:
                    await self.link.load_scripts()
                    server.scripts_loaded = True
                results = await self.link.execute(commands)
            except (AuthenticationError, AuthorizationError) as error:
                raise LayerConnectionError(
                    f"Redis ({server.name}) refused the credentials: {error}; "
                    "check the user and password in the host URL"
                ) from error
            except CONNECTION_ERRORS as error:
                server.scripts_loaded = False
                if never_sent(error) and clock.time() < deadline:
                    await self.backoff.failed(error)  # it certainly did not run: try again
                    continue
                if not repeated and safe_to_repeat(commands):
                    # Typically the first command on a connection that a Redis restart
                    # killed: once more, at once, on a fresh connection (the link drops the
                    # dead one). Only what is safe to run twice.
                    repeated = True
                    continue
                raise LayerConnectionError(
                    f"Redis ({server.name}) is unreachable: {error}"
                ) from error
            if not reloaded and any(isinstance(result, NoScriptError) for result in results):
                # The server lost its scripts (restart or SCRIPT FLUSH): no script ran. Plain
                # commands in the batch are idempotent, so running the batch again is safe.
                server.scripts_loaded = False
                reloaded = True
                continue
            self.backoff.succeeded()
            return results


class LoopConnections:
    """The connections and background tasks of one layer in one event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        topology: Topology,
        servers: list[Server],
        *,
        connect_timeout: float,
        clock: Clock,
    ) -> None:
        self.loop = loop
        self.connections: Connections = topology.connect()
        self.batchers = [
            Batcher(client, servers[index], connect_timeout=connect_timeout, clock=clock)
            for index, client in enumerate(self.connections.clients)
        ]
        self._batcher_of = [self.batchers[client] for client in topology.client_of]
        self.links: set[Link] = set()  # the readers' own connections
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def batcher(self, shard: int) -> Batcher:
        """The batcher of the server holding ``shard``."""
        return self._batcher_of[shard]

    async def script(self, shard: int, script: Script, keys: Sequence[str], *args: Any) -> Any:
        """Run ``script`` on ``shard``'s server; its result (a Redis error raised, translated)."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        (result,) = await self._batcher_of[shard].run(command)
        if isinstance(result, Exception):
            raise translate(result)
        return result

    async def merged_script(
        self,
        shard: int,
        script: Script,
        keys: tuple[str, ...],
        common: tuple[Any, ...],
        args: tuple[Any, ...],
        variant: str = "",
    ) -> tuple[Any, int]:
        """Run ``script`` merged with the calls on the same keys (and ``variant``) waiting
        for the same batch.

        ``common`` arguments are taken from the first of the merged calls; ``args`` of each
        are appended in calling order. Returns the result and this call's position.
        """
        head = ("EVALSHA", script.sha, len(keys), *keys, *common)
        result, position = await self._batcher_of[shard].merge(
            (script.name, variant, *keys), head, args
        )
        if isinstance(result, Exception):
            raise translate(result)
        return result, position

    def open_link(self, shard: int) -> Link:
        """A connection of its own to ``shard``'s server (for a blocking reader); closed with
        the loop, or by :meth:`close_link`."""
        link = Link(self._batcher_of[shard].client)
        self.links.add(link)
        return link

    async def close_link(self, link: Link) -> None:
        self.links.discard(link)
        await link.aclose()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run background work whose failure is logged, not raised."""
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("Redis layer background work failed: %s", task.exception())

    async def aclose(self, running: Iterable[asyncio.Task[Any]] = ()) -> None:
        """Cancel ``running`` and the background tasks, then close every connection."""
        self.closed = True
        tasks = [*running, *self.tasks]
        for task in tasks:
            task.cancel()
        tasks += [batcher.task for batcher in self.batchers if batcher.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in [*self.links, *(batcher.link for batcher in self.batchers)]:
            await link.aclose()
        self.links.clear()
        await self.connections.aclose()


class Closable(Protocol):
    async def aclose(self) -> None: ...


async def close_with_loop(state: Closable) -> AsyncGenerator[None, None]:
    """Registered as an async generator of the loop, so loop shutdown closes the state."""
    try:
        yield
    finally:
        await state.aclose()


def register_with_loop(state: Closable) -> AsyncGenerator[None, None]:
    """Start :func:`close_with_loop` for ``state`` in the running loop; returns the generator
    (close it when the state is closed first, so the loop forgets it)."""
    guard = close_with_loop(state)
    starting = guard.asend(None)  # registers with the loop's async-generator hooks
    try:
        starting.send(None)
    except StopIteration:
        pass
    return guard


def forget_guard(guard: AsyncGenerator[None, None]) -> None:
    """Finish a guard whose state is already closed (finishes without suspending)."""
    closing = guard.aclose()
    try:
        closing.send(None)
    except StopIteration:
        pass
