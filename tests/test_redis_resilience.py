"""The Redis layer under failure and load: restarts, an unreachable server, bursts of
consumers, and use from many event loops. Each test that breaks a server gets its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from asgiref.sync import async_to_sync

from headrace.exceptions import LayerConnectionError
from headrace.layers import ManualClock
from headrace.layers.redis import RedisChannelLayer
from tests.redis_servers import RedisServer, servers, wait_until


@pytest.fixture
def own_server(pytestconfig: pytest.Config) -> Iterator[RedisServer]:
    server = servers(pytestconfig).new(name="resilience")
    yield server
    server.stop()


def layer_on(server: RedisServer, prefix: str, **config: object) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[server.url], prefix=prefix, **config)  # type: ignore[arg-type]


async def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``check`` (bounded) without blocking the loop: only for state outside the layer
    (the server's client list), which no hook can announce."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def client_count(server: RedisServer) -> int:
    with server.client() as client:
        return len(client.client_list()) - 1  # not counting this one


@pytest.mark.slow
async def test_readers_and_senders_carry_on_after_redis_restarts(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headrace.layers.redis")
    reader = layer_on(own_server, "restart", block_timeout=0.5)
    sender = layer_on(own_server, "restart", connect_timeout=5)
    got: list[int] = []
    arrived = asyncio.Event()

    async def read() -> None:
        while True:
            got.append((await reader.receive("stream"))["n"])
            arrived.set()

    async def until(check: Callable[[], bool]) -> None:
        async with asyncio.timeout(15):
            while not check():
                arrived.clear()
                await arrived.wait()

    reading = asyncio.create_task(read())
    for number in range(5):
        await sender.send("stream", {"type": "n", "n": number})
    await until(lambda: len(got) == 5)  # the first five messages

    await asyncio.to_thread(own_server.restart)  # the loop keeps running meanwhile

    delivered = []
    errors: list[str] = []
    for number in range(5, 25):
        try:
            await asyncio.wait_for(sender.send("stream", {"type": "n", "n": number}), 10)
        except LayerConnectionError as error:  # a clear error, never a hang
            errors.append(str(error))
            continue
        delivered.append(number)
    assert all("Redis" in error for error in errors)
    assert len(delivered) >= 19  # at most one send may meet the stale connection
    await until(lambda: set(delivered) <= set(got))  # the messages sent after the restart
    assert got[5:] == sorted(got[5:])  # still in order

    lost = [r for r in caplog.records if "reading 'stream' from Redis failed" in r.getMessage()]
    assert len(lost) == 1  # logged once for the outage, not once per retry
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    await reader.flush()
    await reader.close()
    await sender.close()


@pytest.mark.slow
async def test_send_to_an_unreachable_redis_raises_a_clear_error_then_recovers(
    pytestconfig: pytest.Config,
) -> None:
    server = servers(pytestconfig).new(name="down")
    server.stop()
    layer = layer_on(server, "down", connect_timeout=0.2)
    try:
        with pytest.raises(LayerConnectionError, match=r"Redis \(.*\) is unreachable"):
            await asyncio.wait_for(layer.send("x", {"type": "x"}), 10)
        with pytest.raises(LayerConnectionError):
            await asyncio.wait_for(layer.group_add("g", "x"), 10)
        await asyncio.to_thread(server.start)
        await layer.send("x", {"type": "back"})
        assert await asyncio.wait_for(layer.receive("x"), 5) == {"type": "back"}
    finally:
        await layer.flush()
        await layer.close()
        server.stop()


@pytest.mark.slow
async def test_a_thousand_consumers_come_and_go_without_leaking(own_server: RedisServer) -> None:
    before = client_count(own_server)
    prefix = f"burst-{uuid.uuid4().hex[:8]}"
    server_side = layer_on(own_server, prefix)
    sender = layer_on(own_server, prefix)

    async def connect() -> str:
        channel = await server_side.new_channel()
        await server_side.group_add("lobby", channel)
        return channel

    # 1,000 simultaneous connects: no pool exhaustion, a handful of connections.
    channels = await asyncio.gather(*(connect() for _ in range(1000)))
    assert len(set(channels)) == 1000
    assert client_count(own_server) <= before + 3

    async def consume(channel: str) -> dict[str, object]:
        message = await server_side.receive(channel)
        await server_side.group_discard("lobby", channel)
        return message

    consumers = [asyncio.create_task(consume(channel)) for channel in channels]
    await asyncio.sleep(0)
    await sender.group_send("lobby", {"type": "hello"})
    results = await asyncio.wait_for(asyncio.gather(*consumers), 30)
    assert results == [{"type": "hello"}] * 1000

    # A second wave that leaves without ever receiving anything (receive cancelled).
    async def come_and_go() -> None:
        channel = await connect()
        waiting = asyncio.create_task(server_side.receive(channel))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await server_side.group_discard("lobby", channel)

    await asyncio.gather(*(come_and_go() for _ in range(1000)))
    assert client_count(own_server) <= before + 4
    await server_side.flush()
    await server_side.close()
    await sender.close()
    await eventually(lambda: client_count(own_server) <= before, "connections to close")
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_layer_used_from_sync_code_through_async_to_sync_leaks_nothing(
    pytestconfig: pytest.Config,
) -> None:
    server = servers(pytestconfig).standalone()
    before = client_count(server)
    layer = layer_on(server, f"sync-{uuid.uuid4().hex[:8]}")
    for number in range(10):  # each call runs on a fresh event loop
        async_to_sync(layer.send)("sync.channel", {"type": "n", "n": number})
    got = [async_to_sync(layer.receive)("sync.channel")["n"] for _ in range(10)]
    assert got == list(range(10))
    async_to_sync(layer.group_add)("g", "sync.channel")
    async_to_sync(layer.group_send)("g", {"type": "from.sync"})
    assert async_to_sync(layer.receive)("sync.channel") == {"type": "from.sync"}
    async_to_sync(layer.flush)()
    wait_until(lambda: client_count(server) <= before, "each loop's connections to close")
    assert all(state.closed for state in list(layer._states.values()))


@pytest.mark.slow
def test_redis_failure_never_leaks_a_redis_library_error(pytestconfig: pytest.Config) -> None:
    server = servers(pytestconfig).new(name="gone")
    server.stop()
    layer = layer_on(server, "gone", connect_timeout=0.1)

    async def send() -> None:
        await layer.send("a", {"type": "x"})

    async def group_send() -> None:
        await layer.group_send("g", {"type": "x"})

    async def group_discard() -> None:
        await layer.group_discard("g", "a!b")

    async def send_later() -> None:
        await layer.send("a", {"type": "x"}, delay=5)

    for call in (send, group_send, group_discard, send_later):
        with pytest.raises(LayerConnectionError) as raised:
            async_to_sync(call)()
        assert not isinstance(raised.value, redis.RedisError)


@pytest.mark.slow
async def test_a_reader_outage_backs_off_on_the_layers_clock(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The reading loop retries on the injected clock: with a ManualClock the retry happens
    exactly when the test moves time, and the outage is logged once."""
    caplog.set_level(logging.WARNING, logger="headrace.layers.redis")
    clock = ManualClock()
    prefix = f"manual-{uuid.uuid4().hex[:8]}"
    reader = layer_on(own_server, prefix, clock=clock)
    sender = layer_on(own_server, prefix)
    waiting = asyncio.create_task(reader.receive("outage"))
    await asyncio.wait_for(reader.wait_reading("outage"), 5)
    await asyncio.to_thread(own_server.stop)
    await asyncio.wait_for(clock.wait_armed(), 10)  # the pump sleeps on the clock
    await asyncio.to_thread(own_server.start)
    await sender.send("outage", {"type": "after"})
    assert not waiting.done()  # still pausing: only the clock ends the pause
    for _ in range(3):  # each retry that still meets the old connection pauses again
        clock.advance(5)
        done, _ = await asyncio.wait([waiting], timeout=5)
        if done:
            break
        await asyncio.wait_for(clock.wait_armed(), 10)
    assert waiting.result() == {"type": "after"}
    failed = [r for r in caplog.records if "reading 'outage' from Redis failed" in r.getMessage()]
    assert len(failed) == 1
    assert any("works again" in r.getMessage() for r in caplog.records)
    await reader.flush()
    await reader.close()
    await sender.close()


@pytest.mark.slow
async def test_first_command_after_a_restart_is_retried_on_a_fresh_connection(
    own_server: RedisServer,
) -> None:
    """After a restart every pooled connection is dead; a group change (safe to run twice)
    is sent once more on a fresh connection instead of failing (a WebSocket connect would
    have got 403)."""
    prefix = f"stale-{uuid.uuid4().hex[:8]}"
    layer = layer_on(own_server, prefix)
    try:
        channel = await layer.new_channel()
        await layer.group_add("before", channel)  # the connection is open now
        await asyncio.to_thread(own_server.restart)
        await layer.group_add("after", channel)  # met the dead connection: retried, no error
        await layer.group_send("after", {"type": "joined"})
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "joined"}
    finally:
        await layer.flush()
        await layer.close()


async def _kill_and_restart(server: RedisServer) -> None:
    """SIGKILL (no persistence: the restarted server is empty), then start on the same port."""
    assert server.process is not None
    server.process.kill()
    await asyncio.to_thread(server.process.wait, 10)
    await asyncio.to_thread(server.start)


@pytest.mark.slow
async def test_group_messages_reach_every_member_again_after_redis_restarts_empty(
    own_server: RedisServer,
) -> None:
    prefix = f"regroup-{uuid.uuid4().hex[:8]}"
    server_process = layer_on(own_server, prefix)  # holds the members and reads them
    worker = layer_on(own_server, prefix)  # sends to the group
    members = [await server_process.new_channel() for _ in range(5)]
    for member in members:
        await worker.group_add("room", member)  # any process may add
    await server_process.group_add("room", "room.log")  # a normal channel member too
    members.append("room.log")
    got: dict[str, list[str]] = {member: [] for member in members}
    everyone, everyone_again = asyncio.Event(), asyncio.Event()

    async def read(member: str) -> None:
        while True:
            got[member].append((await server_process.receive(member))["phase"])
            if all(got.values()):
                everyone.set()
            if all("after" in phases for phases in got.values()):
                everyone_again.set()

    readers = [asyncio.create_task(read(member)) for member in members]
    try:
        await worker.group_send("room", {"type": "m", "phase": "before"})
        await asyncio.wait_for(everyone.wait(), 5)

        await _kill_and_restart(own_server)  # every group is gone from Redis now

        async def keep_sending() -> None:
            while True:
                with contextlib.suppress(LayerConnectionError):  # the dead connection, once
                    await worker.group_send("room", {"type": "m", "phase": "after"})
                await asyncio.sleep(0.05)

        sending = asyncio.create_task(keep_sending())
        try:
            await asyncio.wait_for(everyone_again.wait(), 2)  # the promise: within 2 s
        finally:
            sending.cancel()
        assert server_process.statistics().reasserted >= 2  # a process field, a channel field
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await server_process.flush()
        await server_process.close()
        await worker.close()


@pytest.mark.slow
async def test_memberships_are_written_back_when_a_heartbeat_finds_the_keys_gone(
    own_server: RedisServer,
) -> None:
    """Redis may lose keys without dropping connections (a flush, a fail-over): the heartbeat
    notices the process's alive key gone before its time and writes the groups back."""
    prefix = f"flushed-{uuid.uuid4().hex[:8]}"
    owner = layer_on(own_server, prefix, heartbeat_interval=0.2, block_timeout=0.1)
    sender = layer_on(own_server, prefix)
    member = await owner.new_channel()
    await owner.group_add("room", member)
    reading = asyncio.create_task(owner.receive(member))
    await asyncio.wait_for(owner.wait_reading(member), 5)
    written_back = asyncio.create_task(owner.wait_written_back())
    await asyncio.sleep(0)  # waiting from now on
    with own_server.client() as client:
        client.flushall()  # the connections stay up
    await asyncio.wait_for(written_back, 5)
    assert owner.statistics().reasserted == 1  # the group's process field
    await sender.group_send("room", {"type": "found"})
    assert await asyncio.wait_for(reading, 5) == {"type": "found"}
    await owner.flush()
    await owner.close()
    await sender.close()
