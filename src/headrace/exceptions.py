"""Every exception headrace raises, in one tree.

::

    HeadraceError                       root of every headrace *error*
    ├── ChannelLayerError               something went wrong talking to a channel layer
    │   ├── ChannelFull                 the channel is at capacity (``send`` only)
    │   ├── MessageTooLarge             the encoded message is over ``max_message_size``
    │   ├── InvalidMessage (TypeError)  not a dict, or a value of a type we cannot carry
    │   ├── InvalidDelay (ValueError)   a negative, non-finite or doubly given delay
    │   ├── InvalidName (TypeError)     a bad channel or group name
    │   │   ├── InvalidChannelName
    │   │   └── InvalidGroupName
    │   └── LayerConnectionError        the layer's server went away and did not come back in time
    ├── ConnectionStateError            (RuntimeError) e.g. a frame sent after the consumer closed
    └── ConfigurationError              (also Django's ``ImproperlyConfigured``)

    Control-flow signals (not errors; never subclasses of HeadraceError):
    StopConsumer, AcceptConnection, DenyConnection, RequestAborted, RequestTimeout

``InvalidMessage`` and ``InvalidName`` also subclass ``TypeError`` because Channels raises
``TypeError`` for the same mistakes; code ported from Channels that catches ``TypeError`` keeps
working. Every layer also exposes ``ChannelFull`` and ``MessageTooLarge`` as attributes
(``layer.ChannelFull``), as the Channels layer specification asks.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "AcceptConnection",
    "ChannelFull",
    "ChannelLayerError",
    "ConfigurationError",
    "ConnectionStateError",
    "DenyConnection",
    "HeadraceError",
    "InvalidChannelLayerError",
    "InvalidChannelName",
    "InvalidDelay",
    "InvalidGroupName",
    "InvalidMessage",
    "InvalidName",
    "LayerConnectionError",
    "MessageTooLarge",
    "RequestAborted",
    "RequestTimeout",
    "StopConsumer",
]


class HeadraceError(Exception):
    """The root of every error headrace raises."""


class ChannelLayerError(HeadraceError):
    """A channel layer refused or failed an operation."""


class ChannelFull(ChannelLayerError):
    """A ``send`` found the channel at its capacity; the message was not queued.

    ``group_send`` never raises this: it drops the message for that member and counts the
    drop in ``layer.statistics().dropped_full``.
    """


class MessageTooLarge(ChannelLayerError):
    """The encoded message is larger than the layer's ``max_message_size``."""


class InvalidMessage(ChannelLayerError, TypeError):
    """The message is not a dict, or holds a key or value the layer cannot carry."""


class InvalidDelay(ChannelLayerError, ValueError):
    """A delayed send was given a delay or time that makes no sense."""


class InvalidName(ChannelLayerError, TypeError):
    """A channel or group name breaks the naming rules."""


class InvalidChannelName(InvalidName):
    """A channel name breaks the naming rules."""


class InvalidGroupName(InvalidName):
    """A group name breaks the naming rules."""


class LayerConnectionError(ChannelLayerError, ConnectionError):
    """The layer's server could not be reached within the layer's bounded retry time."""


class ConnectionStateError(HeadraceError, RuntimeError):
    """A consumer did something its connection's state forbids ("expected OPEN, got CLOSING").

    See :mod:`headrace.lifecycle` for the table of legal moves.
    """


class ConfigurationError(HeadraceError, ImproperlyConfigured):
    """Settings or layer configuration that cannot work; raised at start-up.

    ``problems`` lists each mistake on its own (one setting may hold several); the message
    joins them. The system check reports each as its own error.
    """

    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


# Channels' name for a bad CHANNEL_LAYERS entry.
InvalidChannelLayerError = ConfigurationError


# -- control-flow signals ---------------------------------------------------------------------


class StopConsumer(Exception):
    """Raised by a consumer handler to end the consumer cleanly."""


class AcceptConnection(Exception):
    """Raised in a WebSocket ``connect`` handler to accept the connection."""


class DenyConnection(Exception):
    """Raised in a WebSocket ``connect`` handler to refuse the connection."""


class RequestAborted(Exception):
    """The client went away before the HTTP request body was read."""


class RequestTimeout(RequestAborted):
    """Reading the HTTP request body took too long."""
