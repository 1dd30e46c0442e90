"""The delay server: messages that arrive on a channel no earlier than a given delay.

Delayed delivery is part of every channel layer's contract, so new code simply writes::

    await channel_layer.send("prog-rocker", message, delay=0.2)

and it works in every process, with no daemon to run. For code written for Channels 1 (the
ProgRock article, for instance) the old form still works: a message sent to the channel
``asgi.delay``::

    {"channel": "prog-rocker", "content": {...}, "delay": 200}   # milliseconds

is delivered as ``content`` to ``channel`` after ``delay`` milliseconds. Whoever reads
``asgi.delay`` forwards the request to the layer's own delayed send: every worker does by
default (``runworker``), the embedded workers of ``runserver`` do, and ``rundelay`` runs a
process that does only that. ``asgi.delay`` is a normal channel, so each request is taken by
exactly one reader: running several ``rundelay`` (or workers) is harmless.

A request that is not in this format is logged with what is wrong and dropped; it never stops
the reader.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Final

from headrace.exceptions import ChannelLayerError, InvalidDelay, InvalidMessage, InvalidName
from headrace.layers import BaseChannelLayer
from headrace.layers.rules import check_channel_name

__all__ = ["DELAY_CHANNEL", "DelayRequest", "forward_delay_request", "parse_delay_request"]

#: The channel the old-format delay requests are sent to.
DELAY_CHANNEL: Final = "asgi.delay"

logger = logging.getLogger("headrace.delay")

# Keys a delay request may carry: the three of the old format, plus "type", which some senders
# add because Channels 2+ consumers need one.
_KEYS: Final = frozenset({"channel", "content", "delay", "type"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DelayRequest:
    """A checked old-format delay request: send ``content`` to ``channel`` in ``delay`` s."""

    channel: str
    content: dict[str, Any]
    delay: float  #: seconds (the wire format says milliseconds)


def parse_delay_request(message: object) -> DelayRequest:
    """Check an ``asgi.delay`` message and return what it asks for.

    Raises :class:`~headrace.exceptions.InvalidMessage` (a missing, unknown or ill-typed key),
    :class:`~headrace.exceptions.InvalidChannelName` (a bad target channel) or
    :class:`~headrace.exceptions.InvalidDelay` (a negative, non-finite or non-numeric delay),
    each saying what was wrong.
    """
    if not isinstance(message, dict):
        raise InvalidMessage(f"a delay request must be a dict, got {type(message).__name__}")
    unknown = sorted(str(key) for key in message if key not in _KEYS)
    if unknown:
        raise InvalidMessage(
            f"a delay request has unknown keys {', '.join(unknown)}; "
            "expected 'channel', 'content' and 'delay' (milliseconds)"
        )
    missing = [key for key in ("channel", "content", "delay") if key not in message]
    if missing:
        raise InvalidMessage(
            f"a delay request lacks {', '.join(repr(key) for key in missing)}; "
            "expected {'channel': NAME, 'content': {...}, 'delay': MILLISECONDS}"
        )
    channel = check_channel_name(message["channel"])
    if channel == DELAY_CHANNEL:
        raise InvalidMessage(f"a delay request cannot target {DELAY_CHANNEL!r} itself")
    content = message["content"]
    if not isinstance(content, dict):
        raise InvalidMessage(
            f"a delay request's 'content' must be a dict (the message to deliver), "
            f"got {type(content).__name__}"
        )
    delay = message["delay"]
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise InvalidDelay(
            f"a delay request's 'delay' must be a number of milliseconds, "
            f"got {type(delay).__name__} {delay!r}"
        )
    if not math.isfinite(delay) or delay < 0:
        raise InvalidDelay(
            f"a delay request's 'delay' must be a finite, non-negative number of "
            f"milliseconds, got {delay!r}"
        )
    return DelayRequest(channel=channel, content=content, delay=delay / 1000)


async def forward_delay_request(layer: BaseChannelLayer, message: dict[str, Any]) -> bool:
    """Schedule the delivery an ``asgi.delay`` message asks for; False when it was refused.

    A refused request (bad format, or a content the layer will not carry) is logged once with
    the reason and dropped. Connection failures of the layer propagate to the caller, which
    retries with backoff (the worker does).
    """
    try:
        request = parse_delay_request(message)
        await layer.send(request.channel, request.content, delay=request.delay)
    except (InvalidMessage, InvalidDelay, InvalidName) as error:
        logger.error("dropped a bad %s message: %s", DELAY_CHANNEL, error)
        return False
    except ChannelLayerError as error:
        if isinstance(error, ConnectionError):
            raise
        logger.error("dropped a %s message the layer refused: %s", DELAY_CHANNEL, error)
        return False
    return True
