"""The connection lifecycle: the table of legal moves, the outbox and the consumers obeying it,
and the group-membership helper the WebSocket and SSE consumers share."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from headrace.exceptions import ConnectionStateError, InvalidChannelLayerError
from headrace.generic.membership import GroupMembership
from headrace.generic.outbox import Outbox
from headrace.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from headrace.layers import InMemoryChannelLayer, get_channel_layer
from headrace.lifecycle import ConnectionState, Event, Lifecycle, event_for, move
from headrace.testing import WebsocketCommunicator

C, OP, CL, L, S = (
    ConnectionState.CONNECTING,
    ConnectionState.OPEN,
    ConnectionState.CLOSING,
    ConnectionState.LOST,
    ConnectionState.STOPPED,
)
A, SE, CLO, CUT, STOP = Event.ACCEPT, Event.SEND, Event.CLOSE, Event.CUT, Event.STOP

# Spelled out by hand (not read back from MOVES): (next state, delivered to the server).
LEGAL: dict[tuple[ConnectionState, Event], tuple[ConnectionState, bool]] = {
    (C, A): (OP, True),
    (C, CLO): (CL, True),
    (C, CUT): (L, False),
    (C, STOP): (S, False),
    (OP, SE): (OP, True),
    (OP, CLO): (CL, True),
    (OP, CUT): (L, False),
    (OP, STOP): (S, False),
    (CL, CLO): (CL, False),
    (CL, CUT): (CL, False),
    (CL, STOP): (S, False),
    (L, A): (L, False),
    (L, SE): (L, False),
    (L, CLO): (L, False),
    (L, CUT): (L, False),
    (L, STOP): (S, False),
    (S, CUT): (S, False),
    (S, STOP): (S, False),
}

ILLEGAL: dict[tuple[ConnectionState, Event], str] = {
    (C, SE): "cannot send a frame: expected OPEN, got CONNECTING",
    (OP, A): "cannot accept: expected CONNECTING, got OPEN",
    (CL, A): "cannot accept: expected CONNECTING, got CLOSING",
    (CL, SE): "cannot send a frame: expected OPEN, got CLOSING",
    (S, A): "cannot accept: expected CONNECTING, got STOPPED",
    (S, SE): "cannot send a frame: expected OPEN, got STOPPED",
    (S, CLO): "cannot close: expected CONNECTING or OPEN, got STOPPED",
}


def test_the_table_covers_every_pair() -> None:
    every = {(state, event) for state in ConnectionState for event in Event}
    assert set(LEGAL) | set(ILLEGAL) == every
    assert not set(LEGAL) & set(ILLEGAL)


@pytest.mark.parametrize(("pair", "expected"), LEGAL.items(), ids=lambda v: str(v))
def test_legal_moves(
    pair: tuple[ConnectionState, Event], expected: tuple[ConnectionState, bool]
) -> None:
    assert move(*pair) == expected


@pytest.mark.parametrize(("pair", "message"), ILLEGAL.items(), ids=lambda v: str(v))
def test_illegal_moves_say_what_was_expected(
    pair: tuple[ConnectionState, Event], message: str
) -> None:
    with pytest.raises(ConnectionStateError, match=message):
        move(*pair)


def test_lifecycle_remembers_whether_it_ever_opened() -> None:
    refused = Lifecycle()
    refused.apply(Event.CUT)
    assert (refused.state, refused.opened, refused.live) == (L, False, False)
    failed = Lifecycle()
    failed.apply(Event.ACCEPT)
    failed.apply(Event.CUT)
    assert (failed.state, failed.opened) == (L, True)


@pytest.mark.parametrize(
    ("message", "event"),
    [
        ({"type": "websocket.accept"}, A),
        ({"type": "http.response.start", "status": 200}, A),
        ({"type": "websocket.http.response.start", "status": 403}, A),
        ({"type": "websocket.send", "text": "x"}, SE),
        ({"type": "http.response.body", "body": b"x", "more_body": True}, SE),
        ({"type": "http.response.body", "body": b""}, CLO),
        ({"type": "websocket.close", "code": 1000}, CLO),
        ({"type": "headrace.websocket.abort"}, None),
    ],
)
def test_event_for_each_outgoing_message(message: dict[str, Any], event: Event | None) -> None:
    assert event_for(message) is event


# -- the outbox applies the table ----------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, message: Any) -> None:
        self.sent.append(dict(message))


def _outbox(send: Recorder) -> Outbox:
    return Outbox(send, limit=4, policy="close", lifecycle=Lifecycle())


async def test_a_frame_after_the_consumers_own_close_raises() -> None:
    send = Recorder()
    outbox = _outbox(send)
    await outbox.send({"type": "websocket.accept"})
    await outbox.send({"type": "websocket.close", "code": 1000})
    await outbox.send({"type": "websocket.close", "code": 1000})  # closing twice: a no-op
    with pytest.raises(ConnectionStateError, match="expected OPEN, got CLOSING"):
        await outbox.send({"type": "websocket.send", "text": "late"})
    assert [m["type"] for m in send.sent] == ["websocket.accept", "websocket.close"]


async def test_frames_after_a_cut_are_discarded_quietly() -> None:
    send = Recorder()
    outbox = _outbox(send)
    await outbox.send({"type": "websocket.accept"})
    await outbox.cut({"type": "websocket.close", "code": 1011})
    await outbox.send({"type": "websocket.send", "text": "late"})
    await outbox.send({"type": "websocket.close"})
    await outbox.cut({"type": "websocket.close", "code": 1011})  # only the first cut writes
    assert send.sent == [{"type": "websocket.accept"}, {"type": "websocket.close", "code": 1011}]
    assert outbox.closed
    assert outbox.accepted


async def test_a_second_accept_raises() -> None:
    outbox = _outbox(Recorder())
    await outbox.send({"type": "websocket.accept"})
    with pytest.raises(ConnectionStateError, match="expected CONNECTING, got OPEN"):
        await outbox.send({"type": "websocket.accept"})


# -- consumers obey it ---------------------------------------------------------------------------


class CloseThenSend(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.close(code=4000)
        await self.send(text_data="after close")


class SyncCloseThenSend(WebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.close(code=4000)
        self.send(text_data="after close")


@pytest.mark.parametrize("cls", [CloseThenSend, SyncCloseThenSend])
async def test_sending_after_close_is_an_error_logged_once(
    cls: type[AsyncWebsocketConsumer], caplog: pytest.LogCaptureFixture
) -> None:
    comm = WebsocketCommunicator(cls.as_asgi(), "/")
    assert (await comm.connect())[0]
    with caplog.at_level(logging.ERROR, logger="headrace"):
        await comm.send_to(text_data="go")
        assert await comm.receive_close() == (4000, "")
        await comm.disconnect(code=4000)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "already closed" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert "expected OPEN, got CLOSING" in str(errors[0].exc_info[1])
    assert await comm.receive_nothing()


async def test_layer_messages_after_the_consumers_close_are_not_handled() -> None:
    handled: list[str] = []

    class Closer(AsyncWebsocketConsumer):
        groups = ["closers"]

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.close()

        async def note(self, event: dict[str, Any]) -> None:
            handled.append(event["n"])

    layer = get_channel_layer()
    assert layer is not None
    comm = WebsocketCommunicator(Closer.as_asgi(), "/")
    assert (await comm.connect())[0]
    await layer.group_send("closers", {"type": "note", "n": "open"})
    await comm.send_to(text_data="bye")
    assert (await comm.receive_close())[0] == 1000
    await layer.group_send("closers", {"type": "note", "n": "closing"})
    await comm.disconnect()
    assert handled == ["open"]


# -- the group-membership helper -------------------------------------------------------------


async def _received(layer: InMemoryChannelLayer, channel: str) -> list[str]:
    got: list[str] = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), 0.05)
        except TimeoutError:
            return got
        got.append(message["n"])


async def test_membership_joins_once_and_leaves_everything() -> None:
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    members = GroupMembership(layer, channel, owner="Feed")
    await members.join_all(["a", "b"])
    await members.join("a")  # joining twice is one membership
    assert members.joined == ("a", "b")
    await layer.group_send("a", {"type": "x", "n": "a1"})
    await members.leave("a")
    await layer.group_send("a", {"type": "x", "n": "a2"})
    await layer.group_send("b", {"type": "x", "n": "b1"})
    assert await _received(layer, channel) == ["a1", "b1"]
    await layer.group_add("by-hand", channel)
    await members.leave_all(also=["by-hand", "b"])
    assert members.joined == ()
    for group in ("a", "b", "by-hand"):
        await layer.group_send(group, {"type": "x", "n": group})
    assert await _received(layer, channel) == []


async def test_membership_without_a_group_layer_is_a_clear_error_before_joining() -> None:
    members = GroupMembership(None, None, owner="Feed (CHANNEL_LAYERS alias 'nope')")
    with pytest.raises(InvalidChannelLayerError, match=r"Feed \(CHANNEL_LAYERS alias 'nope'\)"):
        await members.join_all(["a"])
    members.require([])  # no groups, no layer needed
    await members.leave_all(also=["a"])  # leaving without a layer is harmless
