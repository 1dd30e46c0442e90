"""The Redis layer's storage layout and pure bookkeeping, without Redis."""

from __future__ import annotations

import pytest

from headrace.layers.redis import layout
from headrace.layers.redis.handover import HandOverLedger
from headrace.layers.redis.layout import DelayedKind, EntryKind, Keys


def test_keys_of_a_shard_follow_the_documented_layout() -> None:
    keys = Keys("asgi:")
    assert keys.channel("jobs") == "asgi:c:jobs"
    assert keys.inbox("specific.ab!") == "asgi:i:specific.ab!"
    assert keys.counts("specific.ab!") == "asgi:n:specific.ab!"
    assert keys.alive("specific.ab!") == "asgi:a:specific.ab!"
    assert keys.group("room") == "asgi:g:room"
    assert keys.groups_of("jobs") == "asgi:m:jobs"
    assert (keys.delayed, keys.sequence) == ("asgi:d", "asgi:s")
    assert layout.process_field("specific.ab!") == "p:specific.ab!"
    assert layout.channel_field("jobs") == "c:jobs"


def test_cluster_tags_keep_every_key_of_a_bucket_in_one_slot() -> None:
    keys = Keys("asgi:{asgi.3}:")
    assert keys.inbox("x!") == "asgi:{asgi.3}:i:x!"
    assert keys.delayed == "asgi:{asgi.3}:d"


@pytest.mark.parametrize("kind", list(EntryKind))
def test_inbox_entries_round_trip(kind: EntryKind) -> None:
    entry = kind.pack(12.5, b"\x01\x02\x03\x04", "specific.ab!c", b"body")
    assert entry[:1] == bytes((kind.value,))
    parsed = layout.parse_inbox_entry(entry)
    assert parsed == (kind, 12.5, b"\x01\x02\x03\x04", "specific.ab!c", b"body")
    assert parsed.kind is kind


def test_entry_kinds_are_the_documented_bytes() -> None:
    assert [bytes((k.value,)) for k in EntryKind] == [b"D", b"G", b"A", b"R"]
    assert [bytes((k.value,)) for k in DelayedKind] == [b"c", b"p", b"g"]


@pytest.mark.parametrize(
    "entry",
    [b"", b"D" + bytes(5), b"X" + bytes(13), EntryKind.GROUP.pack(1.0, bytes(4), "room", b"")[:-2]],
    ids=["empty", "short", "unknown kind", "name cut short"],
)
def test_a_broken_inbox_entry_is_a_value_error(entry: bytes) -> None:
    with pytest.raises(ValueError):
        layout.parse_inbox_entry(entry)


def test_delayed_entries_round_trip_behind_their_sequence() -> None:
    entry = DelayedKind.PROCESS.pack(100, "specific.ab!c", b"payload")
    parsed = layout.parse_delayed_entry(bytes(8) + entry)
    assert parsed == (DelayedKind.PROCESS, "specific.ab!c", b"payload")


def test_channel_entries_carry_expiry_and_origin() -> None:
    entry = layout.channel_entry(3.25, b"abcd", b"payload")
    assert layout.unpack_double(entry) == 3.25
    assert layout.entry_origin(entry) == b"abcd"
    assert entry[layout.CHANNEL_HEADER :] == b"payload"
    with pytest.raises(ValueError):
        layout.unpack_double(b"short")


# -- the local hand-over's bookkeeping ---------------------------------------------------------


def test_a_channel_is_settled_until_this_loop_writes_to_it() -> None:
    ledger = HandOverLedger(b"abcd")
    assert ledger.channel_settled("jobs")
    ledger.wrote("jobs")
    assert not ledger.channel_settled("jobs")
    ledger.refused("jobs")  # the channel was full: nothing was queued
    assert ledger.channel_settled("jobs")


def test_taking_own_entries_back_settles_them() -> None:
    ledger = HandOverLedger(b"abcd")
    ledger.wrote("jobs")
    ledger.wrote("jobs")
    ledger.took_own("jobs", 1)
    assert not ledger.channel_settled("jobs")
    ledger.took_own("jobs", 5)  # never below zero
    assert ledger.channel_settled("jobs")
    ledger.wrote("jobs")
    assert not ledger.channel_settled("jobs")


def test_an_empty_pop_settles_only_what_was_written_before_it() -> None:
    ledger = HandOverLedger(b"abcd")
    ledger.wrote("jobs")
    mark = ledger.mark("jobs")
    ledger.wrote("jobs")  # written while the pop was in flight: may still be queued
    ledger.found_empty("jobs", ("jobs", 0), mark, settle=True)
    assert not ledger.channel_settled("jobs")
    mark = ledger.mark("jobs")
    ledger.found_empty("jobs", ("jobs", 0), mark, settle=True)
    assert ledger.channel_settled("jobs")


def test_a_process_needs_every_inbox_found_empty_since_the_last_group_operation() -> None:
    ledger = HandOverLedger(b"abcd")
    process = "specific.ab!"
    assert not ledger.process_settled(process, 2)  # no inbox seen empty yet
    for shard in (0, 1):
        ledger.found_empty(process, (process, shard), ledger.mark(process), settle=shard == 0)
    assert ledger.process_settled(process, 2)
    ledger.group_changed()  # e.g. a group_send that may have reached this process's inbox
    assert not ledger.process_settled(process, 2)
    assert not ledger.nothing_to_settle(process, (process, 0))
    mark = ledger.mark(process)
    ledger.found_empty(process, (process, 0), mark, settle=True)
    assert ledger.nothing_to_settle(process, (process, 0))
    assert not ledger.process_settled(process, 2)  # shard 1 not seen empty since
    ledger.found_empty(process, (process, 1), mark, settle=False)
    assert ledger.process_settled(process, 2)
    ledger.wrote(process)  # a direct message
    assert not ledger.process_settled(process, 2)


def test_a_lone_reader_blocks_at_once_only_when_nothing_is_left_to_settle() -> None:
    ledger = HandOverLedger(b"abcd")
    assert ledger.nothing_to_settle("jobs", ("jobs", 0))
    ledger.wrote("jobs")
    assert not ledger.nothing_to_settle("jobs", ("jobs", 0))
    ledger.forget()  # flushed: nothing of this loop's is queued
    assert ledger.nothing_to_settle("jobs", ("jobs", 0))


# -- which batches may be sent again after a dead connection -----------------------------------


def test_only_idempotent_batches_are_safe_to_repeat() -> None:
    from headrace.layers.redis.wire import safe_to_repeat

    joined = EntryKind.ADD.pack(1.0, bytes(4), "room", b"specific.ab!c")
    assert safe_to_repeat(
        [("RPUSH", "asgi:i:x!", joined), ("PEXPIRE", "asgi:i:x!", 1000), ("HSET", "k", "f", "1")]
    )
    assert safe_to_repeat([("SET", "asgi:a:x!", b"1", "PX", 30000)])
    message = EntryKind.DIRECT.pack(1.0, bytes(4), "specific.ab!c", b"payload")
    assert not safe_to_repeat([("RPUSH", "asgi:i:x!", message)])  # a message twice
    assert not safe_to_repeat([("EVALSHA", "abc", 1, "k")])
    assert not safe_to_repeat([("LPOP", "asgi:c:jobs", 5)])
    assert not safe_to_repeat([("SET", "k", b"1"), ("BLPOP", "k", 5)])
