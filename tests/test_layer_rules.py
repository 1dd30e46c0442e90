"""The layer rules as plain values: no event loop, no layer."""

from __future__ import annotations

import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum

import pytest

from headrace import exceptions
from headrace.layers import ManualClock, rules
from headrace.layers.codec import decode, encode
from headrace.layers.groups import Membership
from headrace.layers.schedule import DelaySchedule


class Colour(StrEnum):
    RED = "red"


class Level(IntEnum):
    HIGH = 3


def test_channel_names() -> None:
    assert rules.check_channel_name("http.request") == "http.request"
    assert rules.check_channel_name("specific.abc!def") == "specific.abc!def"
    assert rules.check_channel_name("specific.abc!") == "specific.abc!"
    with pytest.raises(exceptions.InvalidChannelName, match="has 2 '!' characters"):
        rules.check_channel_name("a!b!c")


def test_names_rejected_once_stay_rejected_after_valid_ones_are_cached() -> None:
    rules.check_channel_name("cached.name")
    rules.check_channel_name("cached.name")
    with pytest.raises(exceptions.InvalidChannelName):
        rules.check_channel_name("cached.name\n")


def test_group_names_refuse_bang() -> None:
    assert rules.check_group_name("room.1-a_b") == "room.1-a_b"
    with pytest.raises(exceptions.InvalidGroupName, match=r"character '!' at position 4"):
        rules.check_group_name("room!x")


def test_process_channel_helpers() -> None:
    assert rules.is_process_channel("a.b!c")
    assert not rules.is_process_channel("a.b")
    assert rules.non_local_name("a.b!c") == "a.b!"
    assert rules.non_local_name("a.b") == "a.b"


def test_messages_with_subclassed_values_are_accepted() -> None:
    message = {"type": "x", "colour": Colour.RED, "level": Level.HIGH, "flag": True}
    assert rules.check_message(message) is message
    assert decode(encode(message)) == {"type": "x", "colour": "red", "level": 3, "flag": True}


def test_message_errors_name_the_path() -> None:
    with pytest.raises(exceptions.InvalidMessage, match=r"message\['a'\]\[0\]\['b'\] is of type"):
        rules.check_message({"a": [{"b": object()}]})
    with pytest.raises(exceptions.InvalidMessage, match="got OrderedDict; pass dict"):
        rules.check_message(OrderedDict(type="x"))


def test_size_rule() -> None:
    rules.check_size(100, 100)
    with pytest.raises(exceptions.MessageTooLarge, match="101 bytes encoded; the limit"):
        rules.check_size(101, 100)


def test_capacity_table() -> None:
    table = rules.CapacityTable(
        10, {"http.response!*": 5, re.compile(r"^big\."): 1000, "http.*": 20}
    )
    assert table("http.response!abc") == 5
    assert table("http.request") == 20
    assert table("big.queue") == 1000
    assert table("other") == 10
    assert table("other") == 10  # cached


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"capacity": 0}, "capacity must be a positive int"),
        ({"capacity": "5"}, "capacity must be a positive int"),
        ({"channel_capacity": {5: 3}}, "keys must be glob strings or compiled"),
        ({"channel_capacity": {"a": -1}}, r"channel_capacity\['a'\] must be a positive int"),
    ],
)
def test_capacity_configuration_errors(arguments: dict[str, object], says: str) -> None:
    with pytest.raises(exceptions.ConfigurationError, match=says):
        rules.CapacityTable(**arguments)  # type: ignore[arg-type]


def test_positive_seconds() -> None:
    assert rules.positive_seconds("expiry", 5) == 5.0
    for bad in (0, -1, "5", True, float("inf"), float("nan")):
        with pytest.raises(exceptions.ConfigurationError, match="expiry must be"):
            rules.positive_seconds("expiry", bad)


def test_due_time() -> None:
    assert rules.due_time(100.0, 5, None) == 105.0
    assert rules.due_time(100.0, timedelta(milliseconds=250), None) == 100.25
    assert rules.due_time(100.0, None, 50.0) == 50.0
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    assert rules.due_time(100.0, None, moment) == moment.timestamp()


def test_membership_bookkeeping() -> None:
    members = Membership()
    members.add("g1", "a", expires_at=10)
    members.add("g1", "b", expires_at=20)
    members.add("g2", "a", expires_at=30)
    assert sorted(members.members("g1", now=5)) == ["a", "b"]
    assert members.members("g1", now=15) == ["b"]  # a's g1 membership expired
    assert members.groups_of("a") == {"g2"}
    assert members.drop_channel("a") == 1
    assert members.members("g2", now=0) == []
    members.discard("g1", "b")
    members.discard("g1", "never")
    assert len(members) == 0


def test_membership_expiry_holds_through_renewals_and_removals() -> None:
    members = Membership()
    members.add("g", "a", expires_at=10)
    members.add("g", "b", expires_at=20)
    members.add("g", "a", expires_at=30)  # renewed: b now expires first
    assert sorted(members.members("g", now=15)) == ["a", "b"]
    assert members.members("g", now=25) == ["a"]
    members.add("g", "c", expires_at=26)
    assert sorted(members.members("g", now=25.5)) == ["a", "c"]
    assert members.members("g", now=27) == ["a"]
    members.discard("g", "a")  # the group is gone, and so is what it knew of expiry
    members.add("g", "d", expires_at=50)
    assert members.members("g", now=40) == ["d"]
    assert members.drop_channel("d") == 1
    members.add("g", "e", expires_at=5)
    assert members.members("g", now=6) == []
    assert len(members) == 0


def test_delay_schedule_is_ordered_and_stable() -> None:
    schedule: DelaySchedule[str] = DelaySchedule()
    assert schedule.push(5, "five")
    assert schedule.push(1, "one")
    assert not schedule.push(5, "five-again")
    assert schedule.next_due() == 1
    assert schedule.pop_due(4) == ["one"]
    assert schedule.pop_due(5) == ["five", "five-again"]
    assert schedule.next_due() is None
    assert len(schedule) == 0


async def test_manual_clock_fires_timers_in_order() -> None:
    clock = ManualClock(start=100)
    fired: list[str] = []
    clock.call_at(110, lambda: fired.append("b"))
    clock.call_at(105, lambda: fired.append("a"))
    cancelled = clock.call_at(107, lambda: fired.append("never"))
    cancelled.cancel()
    clock.advance(4)
    assert fired == []
    clock.advance(10)
    assert fired == ["a", "b"]
    assert clock.time() == 114
    with pytest.raises(ValueError, match="cannot go backwards"):
        clock.advance(-1)


# -- hostile input: unhashable names, self-reference, deep nesting (issue 18, item 7) ---------


@pytest.mark.parametrize("name", [["a", "b"], {"a": 1}, {"a"}], ids=["list", "dict", "set"])
def test_unhashable_names_are_invalid_names_not_type_errors(name: object) -> None:
    with pytest.raises(exceptions.InvalidChannelName, match="must be a str, got"):
        rules.check_channel_name(name)
    with pytest.raises(exceptions.InvalidGroupName, match="must be a str, got"):
        rules.check_group_name(name)


def _nested(depth: int, container: str) -> dict[str, object]:
    """A message whose innermost value sits ``depth`` levels deep (the message is level 1)."""
    inner: object = "leaf"
    for _ in range(depth - 1):
        inner = {"x": inner} if container == "dict" else [inner]
    return {"type": "deep", "x": inner} if depth > 1 else {"type": "deep"}


@pytest.mark.parametrize("container", ["dict", "list"])
def test_messages_nest_up_to_the_documented_depth(container: str) -> None:
    deepest = _nested(rules.MAX_MESSAGE_DEPTH, container)
    assert rules.check_message(deepest) is deepest
    assert decode(encode(deepest)) == deepest
    with pytest.raises(exceptions.InvalidMessage, match="more than 100 levels deep"):
        rules.check_message(_nested(rules.MAX_MESSAGE_DEPTH + 1, container))


@pytest.mark.parametrize("container", ["dict", "list"])
def test_a_5000_deep_message_is_invalid_not_a_recursion_error(container: str) -> None:
    with pytest.raises(exceptions.InvalidMessage, match="levels deep"):
        rules.check_message(_nested(5000, container))


def test_self_referencing_messages_are_invalid() -> None:
    loop: dict[str, object] = {"type": "loop"}
    loop["self"] = loop
    with pytest.raises(exceptions.InvalidMessage, match="contains itself"):
        rules.check_message(loop)
    items: list[object] = []
    items.append(items)
    with pytest.raises(exceptions.InvalidMessage, match="contains itself"):
        rules.check_message({"type": "loop", "items": items})


def test_encode_refuses_what_msgpack_cannot_pack_with_invalid_message() -> None:
    items: list[object] = []
    items.append(items)
    with pytest.raises(exceptions.InvalidMessage, match="cannot be encoded"):
        encode({"type": "unchecked", "items": items})
    assert decode(encode({"type": "after"})) == {"type": "after"}
