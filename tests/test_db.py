"""Old database connections are closed around consumer handlers, as Django does per request.

The test database is SQLite in memory, which Django never really closes (that would destroy
it), so these tests watch ``close_old_connections`` being called — where, when and how often —
rather than a connection going away.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from headrace import db
from headrace.generic.websocket import WebsocketConsumer
from headrace.testing import LiveServer
from tests.conftest_consumers import ws_connect

Log = list[tuple[str, int]]


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> Log:
    """Each real ``close_old_connections`` call, with the thread it ran on."""
    calls: Log = []
    real = db.close_old_connections

    def recorded() -> None:
        calls.append(("cleanup", threading.get_ident()))
        real()

    monkeypatch.setattr(db, "close_old_connections", recorded)
    return calls


async def test_database_sync_to_async_cleans_up_before_and_after_on_the_calls_thread(
    log: Log,
) -> None:
    def work() -> str:
        log.append(("call", threading.get_ident()))
        return "done"

    assert await db.database_sync_to_async(work)() == "done"
    assert [what for what, _ in log] == ["cleanup", "call", "cleanup"]
    assert len({thread for _, thread in log}) == 1


async def test_no_cleanup_while_suspended(log: Log) -> None:
    with db.connection_cleanup_suspended():
        assert await db.database_sync_to_async(lambda: 1)() == 1
        await db.aclose_old_connections()
    assert log == []


async def test_async_cleanup_hops_to_the_orm_thread_at_most_once_per_interval(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "_last_cleanup", -db.CLEANUP_INTERVAL)
    await db.aclose_old_connections()
    await db.aclose_old_connections()  # within the interval: no second hop
    assert len(log) == 1
    assert log[0][1] != threading.get_ident()  # not on the event loop's thread
    monkeypatch.setattr(db, "_last_cleanup", db._last_cleanup - db.CLEANUP_INTERVAL)
    await db.aclose_old_connections()  # the interval has passed
    assert len(log) == 2


class _Recording(WebsocketConsumer):
    calls: Log

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.calls.append(("handler", threading.get_ident()))
        self.send(text_data=f"handled {text_data}")


@pytest.fixture
def recording_server(log: Log) -> Iterator[LiveServer]:
    consumer = type("Recording", (_Recording,), {"calls": log})
    with LiveServer(consumer.as_asgi()) as live:
        yield live


@pytest.mark.slow
async def test_a_sync_consumer_over_a_real_socket_cleans_up_around_every_handler(
    recording_server: LiveServer, log: Log
) -> None:
    async with ws_connect(f"{recording_server.ws_url}/") as ws:
        log.clear()  # what connect did is not this test's business
        for text in ("one", "two", "three"):
            await ws.send(text)
            assert await ws.recv() == f"handled {text}"
    handled = [index for index, (what, _) in enumerate(log) if what == "handler"]
    assert len(handled) == 3
    # The reply to a handler reaches the client before that handler's after-cleanup runs, so
    # only handlers followed by another are sure to have finished: one connection's handlers
    # run one after another, each wrapped whole (cleanup, handler, cleanup).
    for index in handled[:2]:
        # The handler's own thread cleaned up just before and just after it.
        assert log[index - 1] == ("cleanup", log[index][1])
        assert log[index + 1] == ("cleanup", log[index][1])
