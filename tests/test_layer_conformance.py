"""The channel layer contract, run against every backend in tests/layer_backends.py.

Time is a ManualClock: expiry and delay are tested by moving it, never by sleeping. "Nothing
arrives" is checked by a receive that must still be waiting after a short bound.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from headrace import exceptions
from headrace.layers import BaseChannelLayer, ManualClock
from tests.conftest import MakeLayer

QUIET = 0.05  # seconds a receive must stay empty to count as "nothing arrived"


async def nothing_arrives(layer: BaseChannelLayer, channel: str) -> bool:
    try:
        message = await asyncio.wait_for(layer.receive(channel), QUIET)
    except TimeoutError:
        return True
    pytest.fail(f"expected nothing on {channel!r}, got {message!r}")


async def receive(layer: BaseChannelLayer, channel: str) -> dict[str, object]:
    return await asyncio.wait_for(layer.receive(channel), 5)


# -- send and receive ---------------------------------------------------------------------------


async def test_send_then_receive(layer: BaseChannelLayer) -> None:
    await layer.send("test.channel", {"type": "test.message", "text": "hello"})
    assert await receive(layer, "test.channel") == {"type": "test.message", "text": "hello"}


async def test_every_allowed_type_round_trips(layer: BaseChannelLayer) -> None:
    message = {
        "type": "all.types",
        "str": "héllo ☃",
        "bytes": b"\x00\xff",
        "int": -(2**63),
        "big": 2**63 - 1,
        "float": 1.5,
        "true": True,
        "none": None,
        "list": [1, "two", [3.0, None]],
        "dict": {"nested": {"deeper": [b"x"]}},
    }
    await layer.send("types", message)
    assert await receive(layer, "types") == message


async def test_tuples_arrive_as_lists(layer: BaseChannelLayer) -> None:
    await layer.send("tuples", {"type": "t", "pair": (1, 2)})
    assert await receive(layer, "tuples") == {"type": "t", "pair": [1, 2]}


async def test_receiver_gets_a_copy(layer: BaseChannelLayer) -> None:
    message = {"type": "copy", "items": [1]}
    await layer.send("copy", message)
    message["items"].append(2)
    message["type"] = "changed"
    assert await receive(layer, "copy") == {"type": "copy", "items": [1]}


async def test_fifo_order(layer: BaseChannelLayer) -> None:
    for number in range(10):
        await layer.send("fifo", {"type": "n", "n": number})
    assert [(await receive(layer, "fifo"))["n"] for _ in range(10)] == list(range(10))


async def test_receive_waits_for_a_later_send(layer: BaseChannelLayer) -> None:
    waiting = asyncio.create_task(layer.receive("later"))
    await asyncio.sleep(0)
    assert not waiting.done()
    await layer.send("later", {"type": "late"})
    assert await asyncio.wait_for(waiting, 5) == {"type": "late"}


async def test_each_message_goes_to_exactly_one_reader(layer: BaseChannelLayer) -> None:
    readers = [asyncio.create_task(layer.receive("work")) for _ in range(5)]
    await asyncio.sleep(0)
    for number in range(5):
        await layer.send("work", {"type": "job", "n": number})
    got = await asyncio.wait_for(asyncio.gather(*readers), 5)
    assert sorted(message["n"] for message in got) == list(range(5))
    assert await nothing_arrives(layer, "work")


async def test_cancelled_receive_loses_nothing(layer: BaseChannelLayer) -> None:
    waiting = asyncio.create_task(layer.receive("cancel"))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await layer.send("cancel", {"type": "kept"})
    assert await receive(layer, "cancel") == {"type": "kept"}


async def test_receive_cancelled_as_its_message_arrives_loses_nothing(
    layer: BaseChannelLayer,
) -> None:
    for attempt in range(20):
        waiting = asyncio.create_task(layer.receive("race"))
        await asyncio.sleep(0.001 * (attempt % 4))
        await layer.send("race", {"type": "race", "n": attempt})
        waiting.cancel()
        try:
            got = await waiting
        except asyncio.CancelledError:
            got = await receive(layer, "race")
        assert got == {"type": "race", "n": attempt}
    assert await nothing_arrives(layer, "race")


# -- new_channel --------------------------------------------------------------------------------


async def test_new_channel_names_are_unique_process_channels(layer: BaseChannelLayer) -> None:
    names = {await layer.new_channel() for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert name.startswith("specific.")
        assert name.count("!") == 1
        assert layer.valid_channel_name(name)


async def test_new_channel_honours_the_prefix_and_is_usable(layer: BaseChannelLayer) -> None:
    name = await layer.new_channel(prefix="chat")
    assert name.startswith("chat.")
    assert "!" in name
    await layer.send(name, {"type": "direct"})
    assert await receive(layer, name) == {"type": "direct"}


async def test_new_channel_rejects_a_bad_prefix(layer: BaseChannelLayer) -> None:
    with pytest.raises(exceptions.InvalidChannelName, match="must not contain '!'"):
        await layer.new_channel(prefix="bad!prefix")
    with pytest.raises(exceptions.InvalidChannelName, match="character ' '"):
        await layer.new_channel(prefix="bad prefix")


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "is empty"),
        ("has space", "character ' ' at position 3"),
        ("tab\there", r"character '\\t'"),
        ("new\nline", r"character '\\n'"),
        ("trailing\n", r"character '\\n'"),
        ("two!bangs!", "2 '!' characters"),
        ("!leading", "starts with '!'"),
        ("ünïcode", "character 'ü'"),
        ("a" * 100, "100 characters long; names must be shorter than 100"),
        (123, "must be a str, got int"),
        (None, "must be a str, got NoneType"),
        (b"bytes", "must be a str, got bytes"),
        (["a", "list"], "must be a str, got list"),
    ],
)
async def test_bad_channel_names_are_refused_with_the_reason(
    layer: BaseChannelLayer, name: object, says: str
) -> None:
    for call in (
        lambda: layer.send(name, {"type": "x"}),  # type: ignore[arg-type]
        lambda: layer.receive(name),  # type: ignore[arg-type]
        lambda: layer.group_add("group", name),  # type: ignore[arg-type]
        lambda: layer.group_discard("group", name),  # type: ignore[arg-type]
    ):
        with pytest.raises(exceptions.InvalidChannelName, match=says) as raised:
            await call()
        assert isinstance(raised.value, TypeError)  # what Channels raises
        assert isinstance(raised.value, exceptions.HeadraceError)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "is empty"),
        ("with!bang", "character '!'"),
        ("sp ace", "character ' '"),
        ("g" * 150, "150 characters long"),
        (7, "must be a str, got int"),
        (["a", "list"], "must be a str, got list"),
    ],
)
async def test_bad_group_names_are_refused_with_the_reason(
    layer: BaseChannelLayer, name: object, says: str
) -> None:
    for call in (
        lambda: layer.group_add(name, "channel"),  # type: ignore[arg-type]
        lambda: layer.group_discard(name, "channel"),  # type: ignore[arg-type]
        lambda: layer.group_send(name, {"type": "x"}),  # type: ignore[arg-type]
    ):
        with pytest.raises(exceptions.InvalidGroupName, match=says):
            await call()


async def test_names_at_the_limits_are_accepted(layer: BaseChannelLayer) -> None:
    longest = "a" * 99
    for name in (longest, "A-Z_a.z-0.9", "proc.name!", "proc!x.y-z_1"):
        await layer.send(name, {"type": "ok"})
        assert await receive(layer, name) == {"type": "ok"}
    await layer.group_add(longest, "proc!x")
    await layer.group_send(longest, {"type": "g"})
    assert await receive(layer, "proc!x") == {"type": "g"}


# -- messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ("text", "message must be a dict, got str"),
        (None, "message must be a dict, got NoneType"),
        ([("type", "x")], "message must be a dict, got list"),
        ({"type": "x", "when": {1, 2}}, r"message\['when'\] is of type set"),
        ({"type": "x", "a": {"b": [0, object()]}}, r"message\['a'\]\['b'\]\[1\] is of type object"),
        ({"type": "x", 5: "int key"}, "has the key 5 of type int; keys must be str"),
        ({"type": "x", "d": {b"k": 1}}, r"message\['d'\] has the key b'k' of type bytes"),
        ({"type": "x", "n": 2**63}, r"message\['n'\] = 9223372036854775808 does not fit"),
        ({"type": "x", "n": -(2**63) - 1}, "does not fit in a signed 64-bit integer"),
        ({"type": "x", "when": datetime(2026, 1, 1)}, r"message\['when'\] is of type datetime"),
    ],
)
async def test_bad_messages_are_refused_with_the_reason(
    layer: BaseChannelLayer, message: object, says: str
) -> None:
    await layer.group_add("g", "c")
    for call in (
        lambda: layer.send("c", message),  # type: ignore[arg-type]
        lambda: layer.group_send("g", message),  # type: ignore[arg-type]
        lambda: layer.send("c", message, delay=1),  # type: ignore[arg-type]
    ):
        with pytest.raises(exceptions.InvalidMessage, match=says) as raised:
            await call()
        assert isinstance(raised.value, TypeError)
    assert await nothing_arrives(layer, "c")


def _self_referencing() -> dict[str, object]:
    message: dict[str, object] = {"type": "loop"}
    message["self"] = message
    return message


def _deep(levels: int) -> dict[str, object]:
    inner: object = "leaf"
    for _ in range(levels):
        inner = {"x": inner}
    return {"type": "deep", "x": inner}


@pytest.mark.parametrize(
    "message", [_self_referencing(), _deep(5000)], ids=["self-referencing", "5000-deep"]
)
async def test_hostile_messages_are_invalid_not_recursion_errors(
    layer: BaseChannelLayer, message: dict[str, object]
) -> None:
    await layer.group_add("g", "c")
    for call in (
        lambda: layer.send("c", message),
        lambda: layer.group_send("g", message),
        lambda: layer.send("c", message, delay=1),
    ):
        with pytest.raises(exceptions.InvalidMessage, match="levels deep"):
            await call()
    await layer.send("c", {"type": "still.works"})
    assert await receive(layer, "c") == {"type": "still.works"}


async def test_oversized_message_is_refused_and_names_the_limit(make_layer: MakeLayer) -> None:
    layer = await make_layer(max_message_size=1000)
    await layer.send("size", {"type": "fits", "data": b"x" * 900})
    assert (await receive(layer, "size"))["type"] == "fits"
    await layer.group_add("g", "size")
    for call in (
        lambda: layer.send("size", {"type": "big", "data": b"x" * 1000}),
        lambda: layer.group_send("g", {"type": "big", "data": b"x" * 1000}),
    ):
        with pytest.raises(exceptions.MessageTooLarge, match=r"bytes encoded; the limit .* 1,000"):
            await call()
    assert layer.MessageTooLarge is exceptions.MessageTooLarge
    assert await nothing_arrives(layer, "size")


async def test_default_size_limit_is_one_mebibyte(layer: BaseChannelLayer) -> None:
    await layer.send("mib", {"type": "ok", "data": b"x" * (1024 * 1024 - 100)})
    assert (await receive(layer, "mib"))["type"] == "ok"
    with pytest.raises(exceptions.MessageTooLarge, match="1,048,576"):
        await layer.send("mib", {"type": "big", "data": b"x" * (1024 * 1024)})


# -- capacity ---------------------------------------------------------------------------------


async def test_send_past_capacity_raises_channel_full(make_layer: MakeLayer) -> None:
    layer = await make_layer(capacity=3)
    for number in range(3):
        await layer.send("cap", {"type": "n", "n": number})
    with pytest.raises(exceptions.ChannelFull, match=r"'cap' is full .*capacity 3") as raised:
        await layer.send("cap", {"type": "n", "n": 3})
    assert isinstance(raised.value, layer.ChannelFull)
    await layer.send("other", {"type": "other"})  # capacity is per channel
    assert (await receive(layer, "cap"))["n"] == 0
    await layer.send("cap", {"type": "n", "n": 4})  # room again
    assert [(await receive(layer, "cap"))["n"] for _ in range(3)] == [1, 2, 4]
    assert layer.statistics().rejected_full == 1


async def test_channel_capacity_patterns(make_layer: MakeLayer) -> None:
    layer = await make_layer(
        capacity=5,
        channel_capacity={"small.*": 1, re.compile(r"^regex\."): 2, "proc.*!*": 3},
    )
    assert layer.get_capacity("small.one") == 1
    assert layer.get_capacity("regex.two") == 2
    assert layer.get_capacity("proc.abc!client1") == 3
    assert layer.get_capacity("anything.else") == 5
    await layer.send("small.one", {"type": "a"})
    with pytest.raises(exceptions.ChannelFull):
        await layer.send("small.one", {"type": "b"})
    for client in ("proc.abc!one", "proc.abc!two"):  # looked up by prefix, counted per channel
        for _ in range(3):
            await layer.send(client, {"type": "p"})
        with pytest.raises(exceptions.ChannelFull):
            await layer.send(client, {"type": "p"})


async def test_process_channel_capacity_is_looked_up_by_the_part_up_to_the_bang(
    make_layer: MakeLayer,
) -> None:
    layer = await make_layer(capacity=9, channel_capacity={"daphne.response!": 2})
    assert layer.get_capacity("daphne.response!abc") == 2
    assert layer.get_capacity("daphne.response") == 9


async def test_group_send_never_raises_channel_full(make_layer: MakeLayer) -> None:
    layer = await make_layer(capacity=2)
    await layer.group_add("room", "full")
    await layer.group_add("room", "empty")
    await layer.send("full", {"type": "x"})
    await layer.send("full", {"type": "x"})
    await layer.group_send("room", {"type": "broadcast"})
    assert await receive(layer, "empty") == {"type": "broadcast"}
    assert [(await receive(layer, "full"))["type"] for _ in range(2)] == ["x", "x"]
    assert await nothing_arrives(layer, "full")
    assert layer.statistics().dropped_full == 1


# -- expiry -------------------------------------------------------------------------------------


async def test_messages_expire_unread(make_layer: MakeLayer, clock: ManualClock) -> None:
    layer = await make_layer(expiry=10)
    await layer.send("exp", {"type": "old"})
    clock.advance(9)
    await layer.send("exp", {"type": "young"})
    clock.advance(1.5)
    assert await receive(layer, "exp") == {"type": "young"}
    assert layer.statistics().expired >= 1


async def test_default_expiry_is_sixty_seconds(layer: BaseChannelLayer, clock: ManualClock) -> None:
    await layer.send("sixty", {"type": "a"})
    clock.advance(59)
    assert await receive(layer, "sixty") == {"type": "a"}
    await layer.send("sixty", {"type": "b"})
    clock.advance(61)
    assert await nothing_arrives(layer, "sixty")


async def test_expired_messages_free_capacity(make_layer: MakeLayer, clock: ManualClock) -> None:
    layer = await make_layer(capacity=1, expiry=5)
    await layer.send("cap", {"type": "old"})
    clock.advance(6)
    await layer.send("cap", {"type": "new"})
    assert await receive(layer, "cap") == {"type": "new"}


async def test_group_membership_expires(make_layer: MakeLayer, clock: ManualClock) -> None:
    layer = await make_layer(group_expiry=100)
    await layer.group_add("g", "member")
    clock.advance(101)
    await layer.group_send("g", {"type": "late"})
    assert await nothing_arrives(layer, "member")


async def test_group_add_renews_membership(make_layer: MakeLayer, clock: ManualClock) -> None:
    layer = await make_layer(group_expiry=100)
    await layer.group_add("g", "member")
    clock.advance(80)
    await layer.group_add("g", "member")
    clock.advance(80)
    await layer.group_send("g", {"type": "still"})
    assert await receive(layer, "member") == {"type": "still"}


async def test_member_that_lets_a_message_expire_leaves_all_groups(
    make_layer: MakeLayer, clock: ManualClock
) -> None:
    layer = await make_layer(expiry=10)
    for group in ("one", "two"):
        await layer.group_add(group, "gone")
        await layer.group_add(group, "alive")
    await layer.group_send("one", {"type": "first"})
    assert await receive(layer, "alive") == {"type": "first"}
    clock.advance(11)  # "gone" never read "first"
    await layer.group_send("one", {"type": "second"})
    await layer.group_send("two", {"type": "third"})
    assert await receive(layer, "alive") == {"type": "second"}
    assert await receive(layer, "alive") == {"type": "third"}
    assert await nothing_arrives(layer, "gone")
    await layer.group_add("two", "gone")  # joining again works
    await layer.group_send("two", {"type": "back"})
    assert await receive(layer, "gone") == {"type": "back"}


# -- groups -------------------------------------------------------------------------------------


async def test_group_send_reaches_every_member_once(layer: BaseChannelLayer) -> None:
    members = [await layer.new_channel() for _ in range(5)]
    for member in members:
        await layer.group_add("room", member)
        await layer.group_add("room", member)  # adding twice is still one membership
    await layer.group_send("room", {"type": "chat.message", "text": "hi"})
    for member in members:
        assert await receive(layer, member) == {"type": "chat.message", "text": "hi"}
    assert all(await asyncio.gather(*(nothing_arrives(layer, member) for member in members)))


async def test_group_discard_stops_delivery(layer: BaseChannelLayer) -> None:
    await layer.group_add("room", "a")
    await layer.group_add("room", "b")
    await layer.group_discard("room", "a")
    await layer.group_discard("room", "never-added")
    await layer.group_discard("no-such-group", "a")
    await layer.group_send("room", {"type": "x"})
    assert await receive(layer, "b") == {"type": "x"}
    assert await nothing_arrives(layer, "a")


async def test_group_send_to_an_empty_group_is_fine(layer: BaseChannelLayer) -> None:
    await layer.group_send("nobody-here", {"type": "x"})
    assert layer.statistics().group_sends == 1


async def test_group_members_receive_independent_top_level_copies(
    layer: BaseChannelLayer,
) -> None:
    await layer.group_add("room", "a")
    await layer.group_add("room", "b")
    await layer.group_send("room", {"type": "x", "text": "t"})
    first = await receive(layer, "a")
    first["type"] = "changed"
    assert await receive(layer, "b") == {"type": "x", "text": "t"}


async def test_groups_and_channels_are_independent(layer: BaseChannelLayer) -> None:
    await layer.group_add("room", "c1")
    await layer.group_add("lobby", "c1")
    await layer.group_add("lobby", "c2")
    await layer.group_send("room", {"type": "room"})
    await layer.group_send("lobby", {"type": "lobby"})
    assert [(await receive(layer, "c1"))["type"] for _ in range(2)] == ["room", "lobby"]
    assert await receive(layer, "c2") == {"type": "lobby"}
    assert await nothing_arrives(layer, "c2")


# -- delayed delivery -------------------------------------------------------------------------


async def test_delayed_send_arrives_no_earlier_than_its_delay(
    layer: BaseChannelLayer, clock: ManualClock
) -> None:
    await layer.send("d", {"type": "later"}, delay=5)
    waiting = asyncio.create_task(layer.receive("d"))
    clock.advance(4.9)
    await asyncio.sleep(QUIET)
    assert not waiting.done()
    clock.advance(0.1)
    assert await asyncio.wait_for(waiting, 5) == {"type": "later"}


async def test_delayed_messages_arrive_in_due_order(
    layer: BaseChannelLayer, clock: ManualClock
) -> None:
    await layer.send("d", {"type": "n", "n": 3}, delay=3)
    await layer.send("d", {"type": "n", "n": 1}, delay=timedelta(seconds=1))
    await layer.send("d", {"type": "n", "n": 2}, delay=2)
    await layer.send("d", {"type": "n", "n": 22}, delay=2)  # same due time: send order
    await layer.send("d", {"type": "n", "n": 0})
    clock.advance(10)
    got = [(await receive(layer, "d"))["n"] for _ in range(5)]
    assert got == [0, 1, 2, 22, 3]


async def test_many_delayed_messages_arrive_once_each_in_due_order(
    make_layer: MakeLayer, clock: ManualClock
) -> None:
    layer = await make_layer(capacity=1000)
    delays = [(number * 37) % 100 / 10 for number in range(200)]  # 0.0 .. 9.9 s, shuffled
    for number, delay in enumerate(delays):
        await layer.send("many", {"type": "n", "n": number}, delay=delay)
    got: list[int] = []
    for step in range(1, 21):  # time moves in steps while messages are still being moved
        clock.advance(0.5)
        due = sum(1 for delay in delays if delay <= step * 0.5)  # (exact: halves are binary)
        while len(got) < due:
            got.append((await receive(layer, "many"))["n"])
    assert await nothing_arrives(layer, "many")
    assert sorted(got) == list(range(200))
    expected = sorted(range(200), key=lambda number: (delays[number], number))
    assert got == expected
    assert layer.statistics().delayed_pending == 0


async def test_delay_at_an_absolute_time(layer: BaseChannelLayer, clock: ManualClock) -> None:
    when = datetime.fromtimestamp(clock.time() + 30, tz=UTC)
    await layer.send("d", {"type": "at"}, at=when)
    await layer.send("d", {"type": "epoch"}, at=clock.time() + 40)
    clock.advance(29)
    assert await nothing_arrives(layer, "d")
    clock.advance(1)
    assert await receive(layer, "d") == {"type": "at"}
    clock.advance(10)
    assert await receive(layer, "d") == {"type": "epoch"}


async def test_zero_delay_and_past_times_arrive_at_once(
    layer: BaseChannelLayer, clock: ManualClock
) -> None:
    await layer.send("d", {"type": "zero"}, delay=0)
    await layer.send("d", {"type": "past"}, at=clock.time() - 100)
    got = [(await receive(layer, "d"))["type"] for _ in range(2)]
    assert got == ["past", "zero"]  # due order: the past time is due first


async def test_delayed_group_send(layer: BaseChannelLayer, clock: ManualClock) -> None:
    await layer.group_add("room", "m1")
    await layer.group_add("room", "m2")
    await layer.group_send("room", {"type": "later"}, delay=60)
    assert await nothing_arrives(layer, "m1")
    clock.advance(60)
    assert await receive(layer, "m1") == {"type": "later"}
    assert await receive(layer, "m2") == {"type": "later"}
    stats = layer.statistics()
    assert stats.delayed == 1
    assert stats.delayed_pending == 0


@pytest.mark.parametrize("process_channel", [False, True], ids=["normal", "process"])
async def test_delayed_message_for_a_full_channel_is_dropped_and_counted(
    make_layer: MakeLayer, clock: ManualClock, process_channel: bool
) -> None:
    layer = await make_layer(capacity=1)
    channel = await layer.new_channel() if process_channel else "full.later"
    await layer.send(channel, {"type": "first"})
    await layer.send(channel, {"type": "late"}, delay=10)  # accepted now: room is checked when due
    clock.advance(10)
    for _ in range(100):  # the move runs in the background once the timer fires
        if layer.statistics().delayed_pending == 0 and layer.statistics().dropped_full:
            break
        await asyncio.sleep(0.01)
    assert await receive(layer, channel) == {"type": "first"}
    assert await nothing_arrives(layer, channel)
    stats = layer.statistics()
    assert stats.dropped_full == 1
    assert stats.rejected_full == 0


async def test_delayed_message_expires_counting_from_its_due_time(
    make_layer: MakeLayer, clock: ManualClock
) -> None:
    layer = await make_layer(expiry=10)
    await layer.send("d", {"type": "later"}, delay=100)
    clock.advance(105)
    assert await receive(layer, "d") == {"type": "later"}


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"delay": -1}, "finite number of seconds >= 0"),
        ({"delay": float("nan")}, "finite number of seconds >= 0"),
        ({"delay": "5"}, "delay must be seconds"),
        ({"delay": 1, "at": 5.0}, "either delay= or at=, not both"),
        ({"at": datetime(2030, 1, 1)}, "aware datetime"),
        ({"at": "tomorrow"}, "epoch seconds or an aware datetime"),
    ],
)
async def test_bad_delays_are_refused(
    layer: BaseChannelLayer, kwargs: dict[str, object], says: str
) -> None:
    with pytest.raises(exceptions.InvalidDelay, match=says) as raised:
        await layer.send("d", {"type": "x"}, **kwargs)  # type: ignore[arg-type]
    assert isinstance(raised.value, ValueError)
    with pytest.raises(exceptions.InvalidDelay, match=says):
        await layer.group_send("g", {"type": "x"}, **kwargs)  # type: ignore[arg-type]


# -- flush, extensions, statistics --------------------------------------------------------------


async def test_flush_empties_channels_groups_and_delays(
    layer: BaseChannelLayer, clock: ManualClock
) -> None:
    await layer.send("f", {"type": "queued"})
    await layer.group_add("room", "f")
    await layer.send("f", {"type": "delayed"}, delay=5)
    await layer.flush()
    clock.advance(10)
    await layer.group_send("room", {"type": "group"})
    assert await nothing_arrives(layer, "f")
    await layer.send("f", {"type": "after"})  # still usable
    assert await receive(layer, "f") == {"type": "after"}


async def test_extensions(layer: BaseChannelLayer) -> None:
    assert {"groups", "flush", "delay"} <= set(layer.extensions)


async def test_statistics_count_what_happened(layer: BaseChannelLayer) -> None:
    before = layer.statistics()
    await layer.send("s", {"type": "a"})
    await layer.group_add("g", "s")
    await layer.group_send("g", {"type": "b"})
    await receive(layer, "s")
    await receive(layer, "s")
    after = layer.statistics()
    assert after.sent - before.sent == 2
    assert after.received - before.received == 2
    assert after.group_sends - before.group_sends == 1
    assert after.groups >= 1


async def test_layer_exposes_the_shared_exception_classes(layer: BaseChannelLayer) -> None:
    assert layer.ChannelFull is exceptions.ChannelFull
    assert layer.MessageTooLarge is exceptions.MessageTooLarge
    for error in (
        exceptions.ChannelFull,
        exceptions.MessageTooLarge,
        exceptions.InvalidMessage,
        exceptions.InvalidChannelName,
        exceptions.InvalidGroupName,
        exceptions.InvalidDelay,
        exceptions.LayerConnectionError,
        exceptions.ConfigurationError,
    ):
        assert issubclass(error, exceptions.HeadraceError)
