"""A connection's lifecycle: one enum and one table of legal moves.

The consumer core and its outbox share one :class:`Lifecycle` per connection. Every message a
consumer hands to the server is an :class:`Event`; :func:`move` says which state follows and
whether the message goes out, or raises :class:`~headrace.exceptions.ConnectionStateError`
("expected OPEN, got CLOSING") for a move that is a bug in the consumer::

    CONNECTING ──ACCEPT──▶ OPEN ──CLOSE──▶ CLOSING      (the consumer closed or refused)
        │ └──────────CLOSE (refuse)──────▶ CLOSING
        └────CUT────▶ LOST ◀────CUT──── OPEN          (headrace or the client ended it)
    every state ──STOP──▶ STOPPED                       (the consumer finished)

The difference between ``CLOSING`` and ``LOST`` is who ended the connection, and it decides
what a late frame means:

* ``CLOSING``: the consumer's own code closed (``close()``, a refusal, the end of a response).
  A frame sent afterwards is a bug in that code: it raises, at the call that sent it. In a
  server the error is contained like any handler error (logged once, with its traceback);
  under the test communicators it reaches the test.
* ``LOST``: the client went away, or headrace cut the connection off (a slow client, a bad
  frame, a failed handler, a handshake that took too long). The consumer could not know, so
  late frames are discarded quietly; the server's disconnect event follows.

Closing twice is harmless (the second close is a no-op). Nothing may be sent once ``STOPPED``.
The table is :data:`MOVES`; ``tests/test_lifecycle.py`` walks every pair.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from .exceptions import ConnectionStateError

__all__ = ["MOVES", "ConnectionState", "Event", "Lifecycle", "event_for", "move"]


class ConnectionState(enum.Enum):
    """Where one connection is in its life."""

    #: Nothing answered yet (consumers that never answer, such as workers, stay here).
    CONNECTING = "connecting"
    #: Accepted (or the response started): frames may be sent.
    OPEN = "open"
    #: The consumer closed or refused it; waiting for the server's disconnect.
    CLOSING = "closing"
    #: The client went away or headrace cut it off; late frames are discarded.
    LOST = "lost"
    #: The consumer has finished.
    STOPPED = "stopped"


class Event(enum.Enum):
    """What a consumer did (or what happened to its connection)."""

    ACCEPT = "accept"  # websocket.accept, http.response.start
    SEND = "send a frame"  # websocket.send, a body chunk with more to come
    CLOSE = "close"  # websocket.close, the last body chunk
    CUT = "cut off"  # client gone, slow client, bad frame, failure, handshake timeout
    STOP = "stop"  # the consumer finished


_C, _O, _CL, _L, _S = (
    ConnectionState.CONNECTING,
    ConnectionState.OPEN,
    ConnectionState.CLOSING,
    ConnectionState.LOST,
    ConnectionState.STOPPED,
)

#: (state, event) -> next state. A pair that is missing is illegal.
MOVES: Mapping[tuple[ConnectionState, Event], ConnectionState] = {
    (_C, Event.ACCEPT): _O,
    (_C, Event.CLOSE): _CL,
    (_C, Event.CUT): _L,
    (_O, Event.SEND): _O,
    (_O, Event.CLOSE): _CL,
    (_O, Event.CUT): _L,
    (_CL, Event.CLOSE): _CL,  # closing twice is harmless
    (_CL, Event.CUT): _CL,  # the client leaving after our close changes nothing
    (_L, Event.ACCEPT): _L,  # e.g. a sync connect() that answers after the handshake timed out
    (_L, Event.SEND): _L,
    (_L, Event.CLOSE): _L,
    (_L, Event.CUT): _L,
    (_S, Event.CUT): _S,  # a write failing after the consumer finished changes nothing
    **{(state, Event.STOP): _S for state in ConnectionState},
}

#: States in which a message of each kind is handed to the server (elsewhere it is discarded).
_DELIVERED_FROM: Mapping[Event, tuple[ConnectionState, ...]] = {
    Event.ACCEPT: (_C,),
    Event.SEND: (_O,),
    Event.CLOSE: (_C, _O),
}

_WHY = {
    _C: "accept the connection first",
    _O: "the connection is already accepted",
    _CL: "this consumer already closed the connection",
    _S: "the consumer has finished",
}


def move(state: ConnectionState, event: Event) -> tuple[ConnectionState, bool]:
    """The state after ``event`` and whether its message goes to the server.

    Raises :class:`ConnectionStateError` for an illegal move.
    """
    try:
        following = MOVES[(state, event)]
    except KeyError:
        expected = " or ".join(s.name for s in _DELIVERED_FROM.get(event, ()))
        raise ConnectionStateError(
            f"cannot {event.value}: expected {expected}, got {state.name} ({_WHY[state]})"
        ) from None
    return following, state in _DELIVERED_FROM.get(event, ())


_KINDS: Mapping[str, Event] = {
    "websocket.accept": Event.ACCEPT,
    "websocket.http.response.start": Event.ACCEPT,
    "http.response.start": Event.ACCEPT,
    "websocket.send": Event.SEND,
    "websocket.close": Event.CLOSE,
}


def event_for(message: Mapping[str, Any]) -> Event | None:
    """The lifecycle event an outgoing ASGI message is (``None``: not a lifecycle message)."""
    kind = message["type"]
    if kind in ("http.response.body", "websocket.http.response.body"):
        return Event.SEND if message.get("more_body", False) else Event.CLOSE
    return _KINDS.get(kind)


class Lifecycle:
    """One connection's state, moved only through :func:`move`."""

    __slots__ = ("opened", "state")

    def __init__(self, state: ConnectionState = ConnectionState.CONNECTING) -> None:
        self.state = state
        #: Whether the connection was ever ``OPEN`` (a cut before that refused the handshake).
        self.opened = state is ConnectionState.OPEN

    def apply(self, event: Event) -> bool:
        """Move on ``event``; return whether its message goes to the server."""
        self.state, deliver = move(self.state, event)
        if self.state is ConnectionState.OPEN:
            self.opened = True
        return deliver

    @property
    def live(self) -> bool:
        """Neither closed, lost nor stopped: handlers still run and frames still go out."""
        return self.state in (ConnectionState.CONNECTING, ConnectionState.OPEN)

    def __repr__(self) -> str:
        return f"<Lifecycle {self.state.name}>"
