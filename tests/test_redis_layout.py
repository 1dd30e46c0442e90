"""The Redis layer's storage layout and pure bookkeeping, without Redis."""

from __future__ import annotations

import pytest

from headrace.layers.redis import layout
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
