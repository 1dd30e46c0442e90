"""Workers: run the consumers routed for named background channels (``manage.py runworker``).

A worker reads normal channels (``"thumbnails"``, ``"prog-rocker"``) and hands each message to
the application, as a ``{"type": "channel", "channel": NAME}`` scope — the application is
usually a :class:`~headrace.routing.ChannelNameRouter` under the project's
``ProtocolTypeRouter``, as in Channels.

How it differs from Channels' worker:

- **Concurrency with a bound.** Each message gets its own application instance, like a view
  gets its own call; up to ``concurrency`` handlers run at once. Sync consumers run on the
  bounded sync-handler thread pool, and a worker never has more sync handlers in hand than that
  pool has threads.
- **It never hoards.** The worker only waits on the layer for a channel while it could start a
  handler for it right now. Messages it cannot start stay in the layer for other worker
  processes. (Channels' worker takes messages without limit.)
- **Graceful stop.** :meth:`Worker.stop` (``SIGTERM``/``SIGINT`` in ``runworker``) stops
  taking messages, lets the handlers in hand finish within ``shutdown_timeout``, then cancels
  what is left; a second signal cancels at once.
- **Failures stay small.** A handler that raises is logged with its channel and message type
  and the worker goes on. A failing layer is retried with the shared backoff
  (:mod:`headrace.backoff`: logged once per outage, pauses doubling to a cap, on the worker's
  clock); nothing kills the process.
- **Waits for tests.** :meth:`Worker.wait_running`, :meth:`Worker.wait_settled`,
  :meth:`Worker.wait_idle` and :meth:`Worker.wait_stopped` return when the worker reaches that
  condition, so a test never polls its counters.
- **The delay server built in.** A worker that lists ``asgi.delay`` among its channels forwards
  old-format delay requests (see :mod:`headrace.delay`); it needs no route for it.

Because every message gets a fresh instance, a worker consumer must not keep state on ``self``
from one message to the next (Channels kept one instance per channel; nothing documented
relied on it, and it is what made its worker serial).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from django.conf import settings

from headrace.backoff import Backoff
from headrace.delay import DELAY_CHANNEL, forward_delay_request
from headrace.exceptions import ConfigurationError
from headrace.layers import BaseChannelLayer, Clock, capabilities_of, get_channel_layer
from headrace.layers.registry import DEFAULT_CHANNEL_LAYER
from headrace.layers.rules import check_channel_name, is_process_channel
from headrace.process import call_on_loop
from headrace.settings import limits
from headrace.types import ASGIApp, Message

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "Worker",
    "WorkerState",
    "WorkerStatistics",
    "embedded_workers",
    "embedded_workers_enabled",
    "routed_channels",
    "run_embedded_workers",
]

logger = logging.getLogger("headrace.worker")

#: Handlers a worker runs at once unless told otherwise.
DEFAULT_CONCURRENCY: Final = 100
#: Seconds a stopping worker gives the handlers in hand before cancelling them.
DEFAULT_SHUTDOWN_TIMEOUT: Final = 30.0


class WorkerState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStatistics:
    """Counters since the worker started."""

    received: int  #: messages taken off the layer
    handled: int  #: handlers that finished normally
    failed: int  #: handlers that raised (or consumers that ended on an error)
    dropped: int  #: messages refused before a handler ran (no ``type``, bad delay request)
    cancelled: int  #: handlers cancelled because a stop ran out of time
    running: int  #: handlers in hand right now
    outages: int  #: layer outages seen (receiving or forwarding failed, then was retried)


class _SharedBackoff:
    """One :class:`Backoff` for the many tasks that retry the same thing at once.

    A worker has up to ``concurrency`` receives out on one channel; when the layer fails they
    all fail together. The first of them sleeps the pause and the others wait for it to end,
    so the outage counts one failure per round (the pauses double as they should) and is
    logged once.
    """

    __slots__ = ("_pausing", "backoff")

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self._pausing: asyncio.Event | None = None

    async def failed(self, error: BaseException) -> None:
        pausing = self._pausing
        if pausing is not None:
            await pausing.wait()
            return
        pausing = self._pausing = asyncio.Event()
        try:
            await self.backoff.failed(error)
        finally:
            self._pausing = None
            pausing.set()

    def succeeded(self) -> None:
        self.backoff.succeeded()


class _Handled(BaseException):
    """Raised into an application instance when it asks for a second message: it is done.

    A BaseException so that an application's ``except Exception`` does not swallow it.
    """


# -- finding the background channels of an application ------------------------------------------


def _channel_router_mapping(application: object, depth: int = 0) -> dict[str, Any] | None:
    """The ``ChannelNameRouter`` mapping inside ``application``, or None when there is none.

    Looks through ``ProtocolTypeRouter["channel"]``, middleware that keeps its inner
    application as ``inner``, ``app`` or ``application`` (the usual names) or ``__wrapped__``,
    and wrappers written as closures over the application.
    """
    from headrace.routing import ChannelNameRouter, ProtocolTypeRouter

    if depth > 20 or application is None:
        return None
    if isinstance(application, ChannelNameRouter):
        return dict(application.application_mapping)
    if isinstance(application, ProtocolTypeRouter):
        return _channel_router_mapping(application.application_mapping.get("channel"), depth + 1)
    inners = [getattr(application, name, None) for name in ("inner", "app", "application")]
    inners.append(getattr(application, "__wrapped__", None))
    # A wrapper written as a closure (``def wrap(app): async def wrapped(...): ...``).
    for cell in getattr(application, "__closure__", None) or ():
        try:
            inners.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    for inner in inners:
        if inner is not None and inner is not application and callable(inner):
            found = _channel_router_mapping(inner, depth + 1)
            if found is not None:
                return found
    return None


def routed_channels(application: object) -> list[str]:
    """The channel names the application's ``ChannelNameRouter`` routes (empty when none)."""
    mapping = _channel_router_mapping(application)
    return sorted(mapping) if mapping else []


def _is_sync(app: object) -> bool:
    consumer_class = getattr(app, "consumer_class", None)
    return bool(getattr(consumer_class, "_sync", False))


# -- the worker ---------------------------------------------------------------------------------


class Worker:
    """Serve ``channels`` of the layer ``layer_alias`` with ``application``.

    ``application`` may be ``None`` when the only channel is ``asgi.delay``. ``layer`` overrides
    the alias (tests pass a layer with a manual clock). ``clock`` times the backoff pauses after
    a layer failure (tests pass a :class:`~headrace.layers.ManualClock`). Run it with
    ``await worker.run()``; :meth:`stop` ends it gracefully.
    """

    def __init__(
        self,
        application: ASGIApp | None,
        channels: Iterable[str],
        *,
        layer_alias: str = DEFAULT_CHANNEL_LAYER,
        layer: BaseChannelLayer | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        sync_limit: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.channels = list(dict.fromkeys(channels))
        if not self.channels:
            raise ConfigurationError("a worker needs at least one channel to read")
        if type(concurrency) is not int or concurrency < 1:
            raise ConfigurationError(f"concurrency must be a positive int, got {concurrency!r}")
        if not shutdown_timeout >= 0:
            raise ConfigurationError(
                f"shutdown_timeout must be zero or more seconds, got {shutdown_timeout!r}"
            )
        mapping = _channel_router_mapping(application)
        for channel in self.channels:
            try:
                check_channel_name(channel)
            except TypeError as error:
                raise ConfigurationError(f"cannot serve channel {channel!r}: {error}") from error
            if is_process_channel(channel):
                raise ConfigurationError(
                    f"cannot serve {channel!r}: a worker reads normal channels, not "
                    "process-specific ones (names with '!')"
                )
            if channel == DELAY_CHANNEL:
                continue
            if application is None:
                raise ConfigurationError(
                    f"channel {channel!r} needs an application to route it (ASGI_APPLICATION)"
                )
            if mapping is not None and channel not in mapping:
                routed = ", ".join(sorted(mapping)) or "none"
                raise ConfigurationError(
                    f"the application's ChannelNameRouter has no route for channel "
                    f"{channel!r} (it routes: {routed})"
                )
        self.application = application
        self.layer_alias = layer_alias
        self.concurrency = concurrency
        self.shutdown_timeout = float(shutdown_timeout)
        pool = limits().sync_threads
        self.sync_limit = min(concurrency, sync_limit if sync_limit is not None else pool)
        mapping = mapping or {}
        self._sync_channels = frozenset(c for c in self.channels if _is_sync(mapping.get(c)))
        self._consumer_channels = frozenset(
            c for c in self.channels if getattr(mapping.get(c), "consumer_class", None)
        )
        self._layer = layer
        self.state = WorkerState.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._receiving: dict[str, set[asyncio.Task[Message]]] = {c: set() for c in self.channels}
        self._outstanding = self._outstanding_sync = 0
        self._handlers: set[asyncio.Task[None]] = set()
        self._running = self._running_sync = 0
        self._received = self._handled = self._failed = self._dropped = self._cancelled = 0
        self._in_transit = 0  # received, not yet started (between two loop callbacks)
        self._receive_backoffs = {
            channel: _SharedBackoff(
                Backoff(f"receiving on {channel!r}", logger=logger, clock=clock)
            )
            for channel in self.channels
        }
        self._forward_backoff = _SharedBackoff(
            Backoff("forwarding a delay request", logger=logger, clock=clock)
        )
        self._watchers: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._started = threading.Event()
        self._stop_requested = self._stop_now = False

    # -- control ---------------------------------------------------------------------------------

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block (any thread) until the worker is reading its channels."""
        return self._started.wait(timeout)

    def stop(self, *, now: bool = False) -> None:
        """Stop taking messages and finish the ones in hand (``now``: cancel them instead).

        Safe to call from any thread, and more than once.
        """
        loop = self._loop
        if loop is None:  # not running yet: run() will return at once
            self._stop_requested = True
            self._stop_now = self._stop_now or now
            return
        call_on_loop(loop, functools.partial(self._stop, now))

    def _stop(self, now: bool) -> None:
        if self.state in (WorkerState.NEW, WorkerState.RUNNING):
            self.state = WorkerState.STOPPING
        if self._stopping is not None:
            self._stopping.set()
        if now:
            for task in self._handlers:
                task.cancel()

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            received=self._received,
            handled=self._handled,
            failed=self._failed,
            dropped=self._dropped,
            cancelled=self._cancelled,
            running=self._running,
            outages=sum(b.backoff.outages for b in self._backoffs()),
        )

    def _backoffs(self) -> list[_SharedBackoff]:
        return [*self._receive_backoffs.values(), self._forward_backoff]

    # -- waits (for tests and embedding code; call them on the worker's event loop) -----------

    async def wait_running(self) -> None:
        """Until :meth:`run` has started reading (returns at once if it already has, or ended)."""
        await self._wait_until(lambda: self.state is not WorkerState.NEW)

    async def wait_stopped(self) -> None:
        """Until :meth:`run` has finished (stopped, or ended on an error)."""
        await self._wait_until(lambda: self.state is WorkerState.STOPPED)

    async def wait_settled(self, count: int) -> None:
        """Until ``count`` messages in all have been settled since the worker started: handled,
        failed, dropped or cancelled (see :meth:`statistics`)."""
        await self._wait_until(lambda: self._settled() >= count)

    async def wait_idle(self) -> None:
        """Until nothing is in hand and nothing is queued that the worker could take.

        "Queued" is asked of the layer when it can tell (the in-memory layer's
        ``wait_delivered()``); on other layers only the first half is waited for. Delayed
        messages not due yet are not waited for. A stopped worker takes nothing: it is idle
        once its handlers are done.
        """
        while True:
            await self._wait_until(self._nothing_in_hand)
            delivered = getattr(self._layer, "wait_delivered", None)
            if delivered is None or self.state is not WorkerState.RUNNING:
                return
            await delivered(*self.channels)
            if self._nothing_in_hand():
                return

    def _nothing_in_hand(self) -> bool:
        return self._running == 0 and self._in_transit == 0

    def _settled(self) -> int:
        return self._handled + self._failed + self._dropped + self._cancelled

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        if condition():
            return
        entry = (condition, asyncio.get_running_loop().create_future())
        self._watchers.append(entry)
        try:
            await entry[1]
        finally:
            if entry in self._watchers:
                self._watchers.remove(entry)

    def _notify(self) -> None:
        """Wake the waits whose condition now holds (called where the counters change)."""
        for entry in list(self._watchers):
            condition, future = entry
            if condition():
                self._watchers.remove(entry)
                if not future.done():
                    future.set_result(None)

    # -- the main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until :meth:`stop`; returns once the handlers in hand are done."""
        if self.state is not WorkerState.NEW:
            raise RuntimeError(f"a worker runs once: expected state NEW, got {self.state.name}")
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.state = WorkerState.RUNNING
        self._notify()
        try:
            layer = self._layer if self._layer is not None else get_channel_layer(self.layer_alias)
        except BaseException:
            self.state = WorkerState.STOPPED
            self._notify()
            raise
        if layer is None:
            self.state = WorkerState.STOPPED
            self._notify()
            raise ConfigurationError(
                f"no channel layer {self.layer_alias!r} in CHANNEL_LAYERS for the worker"
            )
        self._layer = layer
        logger.info(
            "worker reading %s on layer %r (concurrency %d, %s event loop)",
            ", ".join(self.channels),
            self.layer_alias,
            self.concurrency,
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        self._started.set()
        if self._stop_requested:
            self._stop(self._stop_now)
        try:
            self._fill()
            await self._stopping.wait()
        finally:
            self.state = WorkerState.STOPPING
            await self._withdraw(self.channels)
            await self._drain()
            self.state = WorkerState.STOPPED
            self._notify()
            logger.info("worker stopped (%s)", self.statistics())

    # Waits on the layer: every channel that could start a handler has one receive waiting;
    # further free slots add more receives (so a Redis layer pops several messages per round
    # trip), never more in total than there are free slots. When the bound is reached, the
    # receives left are cancelled (cancellation loses nothing: the layer keeps the message).
    # A receive that completes in the same instant as the cancel is started anyway, so the
    # bound can be passed by at most one message per channel, and only in that race.

    def _can_start(self, channel: str) -> bool:
        if self._running >= self.concurrency:
            return False
        return not (channel in self._sync_channels and self._running_sync >= self.sync_limit)

    def _fill(self) -> None:
        """Add the receives the free slots allow (see above)."""
        if self.state is not WorkerState.RUNNING:
            return
        budget = self.concurrency - self._running - self._outstanding
        sync_budget = self.sync_limit - self._running_sync - self._outstanding_sync
        for channel in self.channels:
            if not self._receiving[channel] and self._can_start(channel):
                self._add_receive(channel)
                budget -= 1
                if channel in self._sync_channels:
                    sync_budget -= 1
        while budget > 0:
            added = False
            for channel in self.channels:
                if budget <= 0:
                    break
                if channel in self._sync_channels:
                    if sync_budget <= 0:
                        continue
                    sync_budget -= 1
                self._add_receive(channel)
                budget -= 1
                added = True
            if not added:
                break

    def _add_receive(self, channel: str) -> None:
        assert self._layer is not None
        task = asyncio.ensure_future(self._receive(self._layer, channel))
        self._receiving[channel].add(task)
        self._outstanding += 1
        if channel in self._sync_channels:
            self._outstanding_sync += 1
        task.add_done_callback(functools.partial(self._on_received, channel))

    def _on_received(self, channel: str, task: asyncio.Task[Message]) -> None:
        self._receiving[channel].discard(task)
        self._outstanding -= 1
        if channel in self._sync_channels:
            self._outstanding_sync -= 1
        if task.cancelled():
            self._fill()  # a slot may have freed while this receive was being withdrawn
            return
        assert self._layer is not None
        self._in_transit -= 1
        self._start(self._layer, channel, task.result())
        if self._running >= self.concurrency:
            self._cancel_receives(self.channels)
        elif self._running_sync >= self.sync_limit:
            self._cancel_receives(self._sync_channels)
        else:
            self._fill()

    def _cancel_receives(self, channels: Iterable[str]) -> None:
        for channel in channels:
            for task in self._receiving[channel]:
                task.cancel()

    async def _withdraw(self, channels: Iterable[str]) -> None:
        """Cancel every receive on ``channels`` and wait until they are gone."""
        tasks = [task for channel in channels for task in self._receiving[channel]]
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)

    async def _receive(self, layer: BaseChannelLayer, channel: str) -> Message:
        """The next message on ``channel``; layer failures are retried with backoff."""
        backoff = self._receive_backoffs[channel]
        while True:
            try:
                message = await layer.receive(channel)
            except Exception as error:
                await backoff.failed(error)
                continue
            backoff.succeeded()
            self._received += 1
            self._in_transit += 1
            return message

    def _start(self, layer: BaseChannelLayer, channel: str, message: Message) -> None:
        is_sync = channel in self._sync_channels
        self._running += 1
        if is_sync:
            self._running_sync += 1
        task = asyncio.ensure_future(self._handle(layer, channel, message))
        self._handlers.add(task)
        task.add_done_callback(functools.partial(self._finished, is_sync))

    def _finished(self, is_sync: bool, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self._running -= 1
        if is_sync:
            self._running_sync -= 1
        if task.cancelled():
            self._cancelled += 1
        self._fill()
        self._notify()

    async def _drain(self) -> None:
        if not self._handlers:
            return
        logger.info(
            "stopping: waiting up to %g s for %d handler(s) in hand",
            self.shutdown_timeout,
            len(self._handlers),
        )
        _, pending = await asyncio.wait(set(self._handlers), timeout=self.shutdown_timeout)
        if pending:
            logger.warning(
                "stopping: %d handler(s) did not finish within %g s; cancelling them",
                len(pending),
                self.shutdown_timeout,
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    # -- one message -----------------------------------------------------------------------------

    async def _handle(self, layer: BaseChannelLayer, channel: str, message: Message) -> None:
        if channel == DELAY_CHANNEL:
            await self._forward_delay(layer, message)
            return
        kind = message.get("type")
        if not isinstance(kind, str) or not kind:
            self._dropped += 1
            logger.error(
                "channel %r: dropped a message without a 'type' (a str naming its handler); "
                "keys: %s",
                channel,
                ", ".join(sorted(map(str, message))) or "none",
            )
            return
        assert self.application is not None  # checked in __init__ for every routed channel
        scope = {"type": "channel", "channel": channel}
        given = False

        async def receive() -> Message:
            nonlocal given
            if given:
                raise _Handled
            given = True
            return message

        async def send(_: Message) -> None:
            raise RuntimeError(
                f"a consumer of background channel {channel!r} has no client to send to; "
                "send to other channels with self.channel_layer"
            )

        try:
            await self.application(scope, receive, send)
        except _Handled:
            self._handled += 1
        except Exception:
            self._failed += 1
            logger.exception(
                "channel %r: the handler for a %r message raised; the worker goes on",
                channel,
                kind,
            )
        else:
            if channel in self._consumer_channels:
                # A consumer returns before asking for more only when its handler raised
                # (logged by the consumer) or raised StopConsumer.
                self._failed += 1
                logger.error(
                    "channel %r: the consumer ended while handling a %r message (its handler "
                    "raised, see above, or stopped it); the worker goes on",
                    channel,
                    kind,
                )
            else:
                self._handled += 1

    async def _forward_delay(self, layer: BaseChannelLayer, message: Message) -> None:
        backoff = self._forward_backoff
        while True:
            try:
                forwarded = await forward_delay_request(layer, dict(message))
            except Exception as error:
                # The layer failed us (not the request): keep the request and retry.
                await backoff.failed(error)
                continue
            backoff.succeeded()
            if forwarded:
                self._handled += 1
            else:
                self._dropped += 1
            return


# -- embedded workers (runserver with the in-memory layer) ---------------------------------------


def embedded_workers_enabled(layer_alias: str = DEFAULT_CHANNEL_LAYER) -> bool:
    """Whether ``runserver`` should run the workers in its own process.

    True when ``HEADRACE_EMBEDDED_WORKERS`` (default ``True``) is on and ``layer_alias`` is an
    in-memory layer — with any other layer, messages can reach separate worker processes, and
    running workers inside the server would be a surprise.
    """
    if not getattr(settings, "HEADRACE_EMBEDDED_WORKERS", True):
        return False
    layer = get_channel_layer(layer_alias)
    return layer is not None and capabilities_of(layer).in_process


@contextlib.asynccontextmanager
async def embedded_workers(
    application: ASGIApp,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    shutdown_timeout: float = 5.0,
    channels: Sequence[str] | None = None,
) -> AsyncIterator[Worker]:
    """Run a worker for every channel ``application`` routes, plus ``asgi.delay``, meanwhile.

    ::

        async with embedded_workers(application):
            await serve_forever()

    The worker stops gracefully (``shutdown_timeout``) when the block ends.
    """
    names = list(channels) if channels is not None else routed_channels(application)
    worker = Worker(
        application,
        [*names, DELAY_CHANNEL],
        layer_alias=layer_alias,
        concurrency=concurrency,
        shutdown_timeout=shutdown_timeout,
    )
    task = asyncio.ensure_future(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            worker.stop(now=True)
            await asyncio.wait([task])
            raise


async def run_embedded_workers(
    application: ASGIApp, layer_alias: str = DEFAULT_CHANNEL_LAYER
) -> None:
    """Run the embedded workers until cancelled: a background coroutine for the server.

    Does nothing (returns at once) when :func:`embedded_workers_enabled` says no. If the worker
    fails, the error is raised once it has stopped; the server's background supervisor
    (:func:`headrace.backoff.supervise`) logs it and runs this again.
    """
    if not embedded_workers_enabled(layer_alias):
        return
    channels = routed_channels(application)
    logger.info(
        "running workers in this process for %s (in-memory layer %r); set "
        "HEADRACE_EMBEDDED_WORKERS = False to run them with runworker instead",
        ", ".join([*channels, DELAY_CHANNEL]),
        layer_alias,
    )
    async with embedded_workers(application, layer_alias, channels=channels) as worker:
        # Ends only if the worker does: on an error (raised here, once the block has waited
        # for the worker, so that the server's supervisor logs it and starts a fresh worker
        # after its backoff) or when someone stopped it on purpose (this returns).
        await worker.wait_stopped()
