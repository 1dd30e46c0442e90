"""The Redis layer's own promises, beyond the shared contract, against a real redis-server.

Several layer instances on one prefix stand for several processes (each has its own process
name, inbox and origin). Time is a ManualClock; "nothing arrived" is a bounded receive.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from headrace import exceptions
from headrace.layers import ManualClock, rules
from headrace.layers.codec import encode
from headrace.layers.redis import RedisChannelLayer, layout
from tests.redis_servers import RedisServer, servers

MakeLayer = Callable[..., RedisChannelLayer]


async def receive(layer: RedisChannelLayer, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), 5)


async def nothing_arrives(layer: RedisChannelLayer, channel: str) -> bool:
    try:
        message = await asyncio.wait_for(layer.receive(channel), 0.05)
    except TimeoutError:
        return True
    pytest.fail(f"expected nothing on {channel!r}, got {message!r}")


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> RedisServer:
    return servers(pytestconfig).standalone()


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def make(
    redis_server: RedisServer, clock: ManualClock, prefix: str
) -> AsyncIterator[MakeLayer]:
    """Makes layers ("processes") sharing one prefix; flushes and closes them afterwards."""
    made: list[RedisChannelLayer] = []

    def make(**config: Any) -> RedisChannelLayer:
        config.setdefault("hosts", [redis_server.url])
        layer = RedisChannelLayer(prefix=prefix, clock=clock, **config)
        made.append(layer)
        return layer

    yield make
    if made:
        await made[0].flush()
    for layer in made:
        await layer.close()


# -- groups across processes ----------------------------------------------------------------


async def test_group_add_then_group_send_from_another_process_always_delivers(
    make: MakeLayer,
) -> None:
    owner, other, sender = make(), make(), make()
    for round_number in range(20):
        channel = await owner.new_channel()
        waiting = asyncio.create_task(owner.receive(channel)) if round_number % 2 else None
        await other.group_add(f"room{round_number}", channel)  # any process may add
        await sender.group_send(f"room{round_number}", {"type": "hi", "n": round_number})
        got = await asyncio.wait_for(waiting, 5) if waiting else await receive(owner, channel)
        assert got == {"type": "hi", "n": round_number}


async def test_group_send_writes_the_message_once_per_process_and_no_member_list(
    make: MakeLayer, raw: aioredis.Redis, prefix: str
) -> None:
    first, second, sender = make(), make(), make()
    members = {first: [await first.new_channel() for _ in range(30)]}
    members[second] = [await second.new_channel() for _ in range(20)]
    for channels in members.values():
        for channel in channels:
            await sender.group_add("big", channel)
    await sender.group_send("big", {"type": "broadcast"})

    group = await raw.hgetall(f"{prefix}:g:big")
    assert sorted(group) == sorted(  # one field per process, never one per member
        f"p:specific.{layer.client_prefix}!".encode() for layer in members
    )
    for layer in members:
        process = f"specific.{layer.client_prefix}!"
        entries = await raw.lrange(f"{prefix}:i:{process}", 0, -1)
        kinds = [layout.parse_inbox_entry(entry)[0] for entry in entries]
        assert kinds.count(ord("G")) == 1  # the message, once for the whole process
    for layer, channels in members.items():
        for channel in channels:
            assert await receive(layer, channel) == {"type": "broadcast"}


async def test_sender_cost_of_group_send_does_not_grow_with_members(
    make: MakeLayer, raw: aioredis.Redis
) -> None:
    owner, sender = make(), make()
    for size, group in ((2, "small"), (400, "large")):
        channels = [await owner.new_channel() for _ in range(size)]
        for channel in channels:
            await sender.group_add(group, channel)

    async def bytes_sent_by(call: Any) -> int:
        await sender.group_send("warm", {"type": "x"})  # connection and scripts ready
        before = (await raw.info("stats"))["total_net_input_bytes"]
        await call
        after = (await raw.info("stats"))["total_net_input_bytes"]
        return int(after - before)

    small = await bytes_sent_by(sender.group_send("small", {"type": "x", "text": "same"}))
    large = await bytes_sent_by(sender.group_send("large", {"type": "x", "text": "same"}))
    assert abs(large - small) < 64  # only the group name differs, not 398 more members


async def test_dead_process_is_skipped_and_forgotten(
    make: MakeLayer, raw: aioredis.Redis, prefix: str
) -> None:
    gone, alive, sender = make(), make(), make()
    dead_channel = await gone.new_channel()
    live_channel = await alive.new_channel()
    await sender.group_add("room", dead_channel)
    await sender.group_add("room", live_channel)
    dead_process = f"specific.{gone.client_prefix}!"
    await raw.delete(f"{prefix}:a:{dead_process}")  # its heartbeat key expired
    await sender.group_send("room", {"type": "hello"})
    assert await receive(alive, live_channel) == {"type": "hello"}
    assert not await raw.hexists(f"{prefix}:g:room", f"p:{dead_process}")
    inbox = await raw.lrange(f"{prefix}:i:{dead_process}", 0, -1)
    assert ord("G") not in [layout.parse_inbox_entry(entry)[0] for entry in inbox]


async def test_every_key_carries_a_ttl(
    make: MakeLayer, raw: aioredis.Redis, prefix: str, clock: ManualClock
) -> None:
    layer, other = make(), make()
    channel = await layer.new_channel()
    await other.group_add("room", channel)
    await other.group_add("room", "normal.member")
    await other.group_send("room", {"type": "x"})
    await other.send(channel, {"type": "direct"})
    await other.send("normal.member", {"type": "direct"})
    await other.send("later", {"type": "delayed"}, delay=30)
    keys = [key async for key in raw.scan_iter(match=f"{prefix}:*")]
    assert len(keys) >= 6
    for key in keys:
        assert await raw.pttl(key) > 0, key


async def test_process_channel_membership_expires_and_drops_on_expiry(
    make: MakeLayer, clock: ManualClock
) -> None:
    layer = make(expiry=10, group_expiry=100)
    sender = make(expiry=10, group_expiry=100)
    member = await layer.new_channel()
    lazy = await layer.new_channel()
    await sender.group_add("short", member)
    await sender.group_add("both", lazy)
    await sender.group_add("other", lazy)
    await sender.group_send("both", {"type": "first"})
    clock.advance(11)  # "lazy" never read "first": it leaves both groups
    await sender.group_send("other", {"type": "after"})
    assert await nothing_arrives(layer, lazy)
    assert layer.statistics().expired >= 1
    clock.advance(90)  # and "member"'s membership of "short" has expired
    await sender.group_send("short", {"type": "late"})
    assert await nothing_arrives(layer, member)


# -- readers ----------------------------------------------------------------------------------


async def test_readers_take_no_more_than_are_waiting(
    make: MakeLayer, raw: aioredis.Redis, prefix: str
) -> None:
    worker, producer = make(), make()
    for number in range(10):
        await producer.send("jobs", {"type": "job", "n": number})
    assert (await receive(worker, "jobs"))["n"] == 0
    assert await raw.llen(f"{prefix}:c:jobs") == 9
    three = await asyncio.wait_for(asyncio.gather(*(worker.receive("jobs") for _ in range(3))), 5)
    assert sorted(message["n"] for message in three) == [1, 2, 3]
    assert await raw.llen(f"{prefix}:c:jobs") == 6


async def _calls(raw: aioredis.Redis, command: str) -> int:
    stats = await raw.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_lone_reader_of_a_normal_channel_blocks_at_once(
    make: MakeLayer, raw: aioredis.Redis
) -> None:
    """One reader, messages from another process: one blocking pop per message, no
    non-blocking pop before it (that would be a second round trip per receive)."""
    reader, sender = make(), make()
    lpops, blpops = await _calls(raw, "lpop"), await _calls(raw, "blpop")
    for number in range(20):
        waiting = asyncio.create_task(receive(reader, "lone"))
        await asyncio.wait_for(reader.wait_reading("lone"), 5)  # blocked in Redis
        await sender.send("lone", {"type": "x", "n": number})
        assert (await waiting)["n"] == number
    assert await _calls(raw, "lpop") - lpops <= 1  # the first receive may settle once
    assert await _calls(raw, "blpop") - blpops >= 20


async def test_competing_workers_share_a_normal_channel(make: MakeLayer) -> None:
    workers = [make() for _ in range(3)]
    producer = make()
    got: list[int] = []
    all_done = asyncio.Event()

    async def work(layer: RedisChannelLayer) -> None:
        while True:
            got.append((await layer.receive("pool"))["n"])
            if len(got) == 60:
                all_done.set()

    tasks = [asyncio.create_task(work(layer)) for layer in workers for _ in range(2)]
    for number in range(60):
        await producer.send("pool", {"type": "job", "n": number})
    await asyncio.wait_for(all_done.wait(), 10)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(got) == list(range(60))  # each exactly once


async def test_local_and_remote_senders_each_keep_their_order(make: MakeLayer) -> None:
    reader, remote = make(), make()
    got: list[tuple[str, int]] = []

    async def read() -> None:
        for _ in range(400):
            message = await reader.receive("mixed")
            got.append((message["who"], message["n"]))

    reading = asyncio.create_task(read())

    async def send(layer: RedisChannelLayer, who: str) -> None:
        for number in range(200):
            while True:
                try:
                    await layer.send("mixed", {"type": "m", "who": who, "n": number})
                    break
                except exceptions.ChannelFull:
                    await asyncio.sleep(0.001)

    await asyncio.gather(send(reader, "local"), send(remote, "remote"))
    await asyncio.wait_for(reading, 10)
    for who in ("local", "remote"):
        assert [n for sender, n in got if sender == who] == list(range(200))


async def test_cancelled_reader_leaves_its_message_for_the_next(make: MakeLayer) -> None:
    layer, sender = make(), make()
    for attempt in range(10):
        waiting = asyncio.create_task(layer.receive("handoff"))
        if attempt % 3 == 1:
            await asyncio.sleep(0)  # registered, its pump not yet in Redis
        elif attempt % 3 == 2:
            await asyncio.wait_for(layer.wait_reading("handoff"), 5)  # blocked in Redis
        await sender.send("handoff", {"type": "x", "n": attempt})
        waiting.cancel()
        try:
            got = await waiting
        except asyncio.CancelledError:
            got = await receive(layer, "handoff")
        assert got["n"] == attempt


def test_receivers_on_uvloop_get_group_messages_and_cancel_cleanly(
    redis_server: RedisServer, prefix: str
) -> None:
    """uvicorn serves on uvloop when it is installed: the hand-offs must work there too."""
    import uvloop

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], type]:
        layer = RedisChannelLayer(hosts=[redis_server.url], prefix=prefix)
        try:
            members = [await layer.new_channel() for _ in range(20)]
            for member in members:
                await layer.group_add("uv", member)
            waiting = [asyncio.create_task(receive(layer, member)) for member in members]
            await asyncio.wait_for(layer.wait_reading(members[-1]), 5)
            await layer.group_send("uv", {"type": "hello"})
            got = await asyncio.gather(*waiting)
            cancelled = asyncio.create_task(layer.receive(members[0]))
            await asyncio.wait_for(layer.wait_reading(members[0]), 5)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            await layer.send(members[0], {"type": "after"})
            after = await receive(layer, members[0])
            return got, after, type(asyncio.get_running_loop())
        finally:
            await layer.flush()
            await layer.close()

    got, after, loop_type = uvloop.run(scenario())
    assert loop_type is uvloop.Loop
    assert got == [{"type": "hello"}] * 20
    assert after == {"type": "after"}


# -- delayed messages -------------------------------------------------------------------------


async def _script_calls(raw: aioredis.Redis) -> int:
    return await _calls(raw, "evalsha")


async def test_sends_of_one_batch_share_one_script_call_first_come_first_served(
    make: MakeLayer, raw: aioredis.Redis
) -> None:
    sender, reader = make(capacity=4), make(capacity=4)
    await sender.send("warm", {"type": "w"})  # connection made and scripts loaded
    before = await _script_calls(raw)
    outcomes = await asyncio.gather(
        *(sender.send("burst", {"type": "b", "n": n}) for n in range(10)),
        return_exceptions=True,
    )
    # The first send goes out at once; the nine issued while it is in flight become one
    # call, which takes as many as there is room for, in the order they were sent.
    assert await _script_calls(raw) - before == 2
    assert [type(outcome).__name__ for outcome in outcomes] == ["NoneType"] * 4 + [
        "ChannelFull"
    ] * 6
    assert "'burst' is full" in str(outcomes[4])
    assert [(await receive(reader, "burst"))["n"] for _ in range(4)] == [0, 1, 2, 3]
    assert await nothing_arrives(reader, "burst")


async def test_merged_sends_to_one_process_keep_each_channels_capacity(make: MakeLayer) -> None:
    sender, reader = make(capacity=2), make(capacity=2)
    one, two = await reader.new_channel(), await reader.new_channel()
    await sender.send("warm", {"type": "w"})
    outcomes = await asyncio.gather(
        *(sender.send(channel, {"type": "m", "n": n}) for n in range(3) for channel in (one, two)),
        return_exceptions=True,
    )
    refused = [isinstance(outcome, exceptions.ChannelFull) for outcome in outcomes]
    assert refused == [False, False, False, False, True, True]  # the third of each channel
    assert [(await receive(reader, one))["n"] for _ in range(2)] == [0, 1]
    assert [(await receive(reader, two))["n"] for _ in range(2)] == [0, 1]
    assert await nothing_arrives(reader, one)


async def test_a_delayed_message_is_moved_inside_redis_and_an_expired_reader_leaves_its_groups(
    make: MakeLayer, clock: ManualClock
) -> None:
    sender, reader = make(expiry=5), make(expiry=5)
    await reader.group_add("room", "gone.reader")
    await sender.send("gone.reader", {"type": "never read"})
    await sender.send("gone.reader", {"type": "late"}, delay=10)
    clock.advance(10)  # the first message has expired unread by the time the second is due
    await asyncio.wait_for(sender.wait_moved(), 5)
    assert sender.statistics().expired == 1
    assert await receive(reader, "gone.reader") == {"type": "late"}
    await sender.group_send("room", {"type": "to the room"})
    assert await nothing_arrives(reader, "gone.reader")  # it left the room


async def test_several_movers_deliver_each_delayed_message_once(
    make: MakeLayer, clock: ManualClock
) -> None:
    movers = [make() for _ in range(3)]
    for number in range(30):
        await movers[number % 3].send("due", {"type": "d", "n": number}, delay=5 + number % 4)
    clock.advance(10)  # every mover's timer fires; they all race for the same set
    await asyncio.gather(
        *(layer.move_due() for layer in movers)  # and once more
    )
    got = sorted([(await receive(movers[0], "due"))["n"] for _ in range(30)])
    assert got == list(range(30))
    assert await nothing_arrives(movers[0], "due")


async def test_move_due_delivers_what_a_dead_process_scheduled_once(
    make: MakeLayer, clock: ManualClock
) -> None:
    doomed, sweeper = make(), make()
    await doomed.send("orphans", {"type": "orphan"}, delay=5)
    await doomed.close()  # gone before the due time: no process times this message now
    assert await sweeper.move_due() == 0  # not due yet
    clock.advance(6)
    assert await sweeper.move_due() == 1
    assert await sweeper.move_due() == 0  # moved once, never twice
    assert await receive(sweeper, "orphans") == {"type": "orphan"}
    assert await nothing_arrives(sweeper, "orphans")


async def test_delayed_message_waits_for_a_reader_of_another_process(
    make: MakeLayer, clock: ManualClock
) -> None:
    sender, reader = make(), make()
    channel = await reader.new_channel()
    await sender.send(channel, {"type": "later"}, delay=60)
    clock.advance(61)
    assert await receive(reader, channel) == {"type": "later"}


# -- flush, encryption, configuration ---------------------------------------------------------


async def test_flush_deletes_only_keys_under_its_own_prefix(
    make: MakeLayer, raw: aioredis.Redis, prefix: str
) -> None:
    layer = make()
    neighbours = [f"{prefix}x:channel", f"other-{prefix}:c:x", prefix, "unrelated"]
    for key in neighbours:
        await raw.set(key, b"keep", ex=300)
    await layer.send("a", {"type": "x"})
    await layer.group_add("g", "a")
    await layer.send("b", {"type": "x"}, delay=100)
    await layer.flush()
    assert [key async for key in raw.scan_iter(match=f"{prefix}:*")] == []
    for key in neighbours:
        assert await raw.get(key) == b"keep"
    await raw.delete(*neighbours)


async def test_encrypted_messages_are_unreadable_in_redis_and_keys_rotate(
    make: MakeLayer, raw: aioredis.Redis, prefix: str
) -> None:
    old = make(symmetric_encryption_keys=["old-key"])
    rotated = make(symmetric_encryption_keys=["new-key", "old-key"])
    await old.send("secret", {"type": "x", "text": "attack at dawn"})
    stored = await raw.lrange(f"{prefix}:c:secret", 0, -1)
    assert len(stored) == 1
    assert b"attack at dawn" not in stored[0]
    assert await receive(rotated, "secret") == {"type": "x", "text": "attack at dawn"}
    channel = await rotated.new_channel()
    await rotated.group_add("g", channel)
    await old.group_send("g", {"type": "x", "text": "group too"})
    assert await receive(rotated, channel) == {"type": "x", "text": "group too"}


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"prefix": "a:b"}, "prefix must be"),
        ({"prefix": ""}, "prefix must be"),
        ({"colour": "blue"}, "unknown CONFIG keys: colour"),
        ({"hosts": "redis://localhost"}, "hosts must be a non-empty list"),
        ({"hosts": []}, "hosts must be a non-empty list"),
        ({"hosts": ["http://localhost"]}, "must start with redis://"),
        ({"hosts": [("localhost", "6379")]}, r"must be \(str, int\)"),
        ({"hosts": [{"sentinels": []}]}, "needs 'sentinels'"),
        ({"hosts": ["redis://a:1", "redis://a:1"]}, "listed twice"),
        ({"cluster": True, "cluster_buckets": 0}, "cluster_buckets"),
        ({"symmetric_encryption_keys": "one"}, "non-empty list"),
        ({"expiry": 0}, "expiry must be a positive"),
        ({"heartbeat_interval": -1}, "heartbeat_interval"),
    ],
)
def test_bad_configuration_is_refused_with_the_reason(config: dict[str, Any], says: str) -> None:
    with pytest.raises(exceptions.ConfigurationError, match=says):
        RedisChannelLayer(**config)


def test_layer_is_exported_and_declares_its_capabilities() -> None:
    import headrace.layers.redis as package

    assert package.__all__ == ["RedisChannelLayer", "RedisLayerStatistics"]
    assert {"groups", "flush", "delay"} <= set(RedisChannelLayer.extensions)
    assert RedisChannelLayer.process_wide is False


async def test_wait_reading_returns_once_the_reader_is_blocked_in_redis(
    make: MakeLayer, raw: aioredis.Redis
) -> None:
    reader = make()
    waiting = asyncio.create_task(reader.receive("blocked.here"))
    await asyncio.wait_for(reader.wait_reading("blocked.here"), 5)
    assert not waiting.done()
    await raw.rpush(  # a message written by any process now reaches it through Redis
        f"{reader.prefix}:c:blocked.here", _channel_entry(reader, {"type": "raw"})
    )
    assert await asyncio.wait_for(waiting, 5) == {"type": "raw"}


def _channel_entry(layer: RedisChannelLayer, message: dict[str, Any]) -> bytes:
    from headrace.layers.codec import encode

    expires_at = layer.clock.time() + 60
    return layout.channel_entry(expires_at, layout.NO_ORIGIN, encode(message))


async def test_wait_moved_returns_once_due_messages_are_in_their_channel(
    make: MakeLayer, raw: aioredis.Redis, clock: ManualClock, prefix: str
) -> None:
    sender = make()
    await sender.send("later", {"type": "later"}, delay=5)
    await sender.wait_moved()  # nothing due yet: returns at once
    assert await raw.llen(f"{prefix}:c:later") == 0
    clock.advance(5)
    await asyncio.wait_for(sender.wait_moved(), 5)
    assert await raw.llen(f"{prefix}:c:later") == 1  # moved, nobody has read it
    assert sender.statistics().delayed_pending == 0


async def test_receive_on_another_process_channel_raises_at_once(make: MakeLayer) -> None:
    layer, other = make(), make()
    for foreign in ("specific.0123456789ab!x", "chat.ffffffffffff!made-up", "a.b.0000aaaa1111!"):
        with pytest.raises(exceptions.InvalidChannelName, match="another process"):
            await asyncio.wait_for(layer.receive(foreign), 1)  # at once, never a hang
    # A channel of another layer instance of this process (the registry makes one per event
    # loop) is this process's channel: it can be read.
    channel = await other.new_channel()
    await other.send(channel, {"type": "here"})
    assert await receive(layer, channel) == {"type": "here"}


async def test_direct_sends_stay_within_capacity_while_the_inbox_is_drained(
    make: MakeLayer, raw: aioredis.Redis, prefix: str
) -> None:
    """A process takes its inbox in as entries arrive (so group messages meet capacity on
    arrival); direct messages it holds for a channel nobody reads yet still count against
    that channel's capacity in Redis, so senders get ChannelFull as before."""
    owner, sender = make(capacity=2), make(capacity=2)
    reading, idle = await owner.new_channel(), await owner.new_channel()
    waiting = asyncio.create_task(owner.receive(reading))  # the process's pump is running
    await asyncio.wait_for(owner.wait_reading(reading), 5)
    await sender.send(idle, {"type": "n", "n": 0})
    await sender.send(idle, {"type": "n", "n": 1})
    inbox = f"{prefix}:i:{rules.non_local_name(idle)}"
    async with asyncio.timeout(5):
        while await raw.llen(inbox):  # taken in by the owner, not yet received
            await asyncio.sleep(0.01)
    with pytest.raises(exceptions.ChannelFull):
        await sender.send(idle, {"type": "n", "n": 2})
    assert [(await receive(owner, idle))["n"] for _ in range(2)] == [0, 1]
    await sender.send(reading, {"type": "n", "n": 3})
    assert (await asyncio.wait_for(waiting, 5))["n"] == 3


# -- entries that are not messages --------------------------------------------------------------


def _warnings_about(caplog: pytest.LogCaptureFixture, where: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING"
        and "is not a message" in r.getMessage()
        and where in r.getMessage()
    ]


async def test_undecodable_entries_in_a_channel_are_logged_counted_and_skipped(
    make: MakeLayer, raw: aioredis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="headrace.layers.redis")
    reader = make()
    later = reader.clock.time() + 60
    good = encode({"type": "good"})
    await raw.rpush(
        f"{prefix}:c:bad.list",
        layout.channel_entry(later, layout.NO_ORIGIN, b"\xc1\xc1\xc1"),  # garbage
        b"\x00\x01",  # truncated before the payload
        layout.channel_entry(later, layout.NO_ORIGIN, good[:-2]),  # truncated payload
        layout.channel_entry(later, layout.NO_ORIGIN, msgpack.packb([1, 2])),  # not a dict
        layout.channel_entry(later, layout.NO_ORIGIN, msgpack.packb("text")),  # not a dict
    )
    await make().send("bad.list", {"type": "good"})
    assert await receive(reader, "bad.list") == {"type": "good"}  # the reader carried on
    stats = reader.statistics()
    assert stats.undecodable == 5
    assert stats.undecodable_by_kind == {"garbage": 1, "truncated": 2, "not a message dict": 2}
    assert len(_warnings_about(caplog, "'bad.list'")) == 3  # once per kind, with the channel


async def test_a_message_sealed_with_a_key_the_reader_lacks_is_skipped(
    make: MakeLayer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headrace.layers.redis")
    reader = make(symmetric_encryption_keys=["the-new-key"])
    rotated_wrongly = make(symmetric_encryption_keys=["an-old-key"])
    right = make(symmetric_encryption_keys=["the-new-key", "an-old-key"])
    await rotated_wrongly.send("sealed", {"type": "unreadable"})
    await right.send("sealed", {"type": "readable"})
    assert await receive(reader, "sealed") == {"type": "readable"}
    assert reader.statistics().undecodable_by_kind == {
        "encrypted with a key this layer does not have": 1
    }
    assert len(_warnings_about(caplog, "'sealed'")) == 1


async def test_undecodable_entries_in_an_inbox_are_logged_counted_and_skipped(
    make: MakeLayer, raw: aioredis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headrace.layers.redis")
    reader, sender = make(), make()
    channel = await reader.new_channel()
    await sender.group_add("room", channel)
    process = rules.non_local_name(channel)
    later = reader.clock.time() + 60
    await raw.rpush(
        f"{prefix}:i:{process}",
        b"Z" + bytes(20),  # garbage: no such entry kind
        b"D\x00\x01",  # truncated
        layout.EntryKind.DIRECT.pack(later, layout.NO_ORIGIN, channel, msgpack.packb([1])),
        layout.EntryKind.GROUP.pack(later, layout.NO_ORIGIN, "room", b"\xc1"),
        layout.EntryKind.GROUP.pack(later, layout.NO_ORIGIN, "room", msgpack.packb(7)),
    )
    await sender.send(channel, {"type": "direct"})
    await sender.group_send("room", {"type": "group"})
    assert await receive(reader, channel) == {"type": "direct"}
    assert await receive(reader, channel) == {"type": "group"}  # non-dicts never arrive
    assert reader.statistics().undecodable_by_kind == {
        "garbage": 2,
        "truncated": 1,
        "not a message dict": 2,
    }
    assert len(_warnings_about(caplog, f"the inbox of {process}")) == 2  # garbage, truncated
    assert len(_warnings_about(caplog, f"{channel!r}")) == 1  # the direct non-dict


async def test_a_reader_that_crashes_is_logged_and_restarted_with_backoff(
    make: MakeLayer,
    raw: aioredis.Redis,
    prefix: str,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="headrace.layers.redis")
    reader, sender = make(), make()
    await raw.set(f"{prefix}:c:wrong.type", b"not a list")  # every pop fails: WRONGTYPE
    waiting = asyncio.create_task(reader.receive("wrong.type"))
    await asyncio.wait_for(clock.wait_armed(), 5)  # crashed, logged, pausing on the clock
    crashes = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(crashes) == 1
    assert "WRONGTYPE" in crashes[0].getMessage()
    await raw.delete(f"{prefix}:c:wrong.type")
    await sender.send("wrong.type", {"type": "after"})
    clock.advance(5)  # the pause is over: the reader runs again
    assert await asyncio.wait_for(waiting, 5) == {"type": "after"}
