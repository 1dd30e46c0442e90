"""The channel layer rules as plain functions over values.

Names, messages, sizes, capacities and due times are decided here, with no event loop and no
I/O, so every backend applies exactly the same rules and each rule is testable on its own.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from headrace.exceptions import (
    ConfigurationError,
    InvalidChannelName,
    InvalidDelay,
    InvalidGroupName,
    InvalidMessage,
    MessageTooLarge,
)

__all__ = [
    "MAX_MESSAGE_DEPTH",
    "MAX_NAME_LENGTH",
    "CapacityTable",
    "check_channel_name",
    "check_group_name",
    "check_message",
    "check_size",
    "due_time",
    "is_process_channel",
    "non_local_name",
    "positive_int",
    "positive_seconds",
]

#: Names must be shorter than this many characters.
MAX_NAME_LENGTH: Final = 100

#: Messages may nest lists and dicts at most this deep (the message itself is level 1). Real
#: messages nest a few levels; the bound turns a self-referencing or hostile value into
#: :class:`InvalidMessage` instead of a ``RecursionError``, and stays well under msgpack's
#: own nesting limit (511) so every checked message can be encoded.
MAX_MESSAGE_DEPTH: Final = 100

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

_CHANNEL_RE: Final = re.compile(r"[A-Za-z0-9._-]+(?:![A-Za-z0-9._-]*)?", re.ASCII)
_GROUP_RE: Final = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
_ALLOWED_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
)

# Names already found valid. Sends go to the same few names over and over; a set lookup is
# several times cheaper than a regular expression. Bounded so hostile input cannot grow it.
_valid_channels: set[str] = set()
_valid_groups: set[str] = set()
_CACHE_LIMIT: Final = 20_000


def _name_problem(kind: str, name: object, *, bang_allowed: bool) -> str:
    """Say precisely why ``name`` is not a valid channel or group name."""
    if not isinstance(name, str):
        return f"{kind} name must be a str, got {type(name).__name__} {name!r}"
    if not name:
        return f"{kind} name is empty"
    if len(name) >= MAX_NAME_LENGTH:
        return (
            f"{kind} name {name[:40]!r}... is {len(name)} characters long; "
            f"names must be shorter than {MAX_NAME_LENGTH}"
        )
    rule = "ASCII letters, digits, '.', '-' and '_'"
    if bang_allowed:
        rule += " and at most one '!'"
        if name.count("!") > 1:
            return (
                f"{kind} name {name!r} has {name.count('!')} '!' characters; at most one is allowed"
            )
        if name.startswith("!"):
            return f"{kind} name {name!r} starts with '!'; a name is needed before the '!'"
    for position, char in enumerate(name):
        if char not in _ALLOWED_CHARS and not (bang_allowed and char == "!"):
            return (
                f"{kind} name {name!r} has the character {char!r} at position {position}; "
                f"only {rule} are allowed"
            )
    return f"{kind} name {name!r} is not valid; only {rule} are allowed"  # pragma: no cover


def check_channel_name(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise :class:`InvalidChannelName`.

    A channel name is shorter than 100 characters of ASCII letters, digits, ``.``, ``-`` and
    ``_``, with at most one ``!`` (which marks a process-specific channel).
    """
    try:
        if name in _valid_channels:
            return name
    except TypeError:  # unhashable (a list, a dict): never a name; explained below
        pass
    if type(name) is str and len(name) < MAX_NAME_LENGTH and _CHANNEL_RE.fullmatch(name):
        if len(_valid_channels) >= _CACHE_LIMIT:
            _valid_channels.clear()
        _valid_channels.add(name)
        return name
    raise InvalidChannelName(_name_problem("channel", name, bang_allowed=True))


def check_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise :class:`InvalidGroupName`.

    Group names follow the channel rules but may not contain ``!`` (as in Channels): a group is
    not a process-specific channel.
    """
    try:
        if name in _valid_groups:
            return name
    except TypeError:  # unhashable (a list, a dict): never a name; explained below
        pass
    if type(name) is str and len(name) < MAX_NAME_LENGTH and _GROUP_RE.fullmatch(name):
        if len(_valid_groups) >= _CACHE_LIMIT:
            _valid_groups.clear()
        _valid_groups.add(name)
        return name
    raise InvalidGroupName(_name_problem("group", name, bang_allowed=False))


def is_process_channel(name: str) -> bool:
    """True for a process-specific channel (one containing ``!``)."""
    return "!" in name


def non_local_name(name: str) -> str:
    """The part of ``name`` up to and including ``!``; the whole name for a normal channel."""
    bang = name.find("!")
    return name if bang < 0 else name[: bang + 1]


# -- messages -----------------------------------------------------------------------------------

_SCALARS: Final = frozenset({str, bytes, float, bool, type(None)})
_ALLOWED_DESCRIPTION: Final = "str, bytes, int, float, bool, None, list and dict (with str keys)"


def check_message(message: object) -> dict[str, Any]:
    """Return ``message`` if a channel layer can carry it, else raise :class:`InvalidMessage`.

    A message is a dict with str keys whose values are str, bytes, int (signed 64-bit), float,
    bool, None, or lists and dicts of those. Tuples are accepted and arrive as lists. The
    error names the offending key path and type.
    """
    if type(message) is not dict:
        if isinstance(message, Mapping):
            raise InvalidMessage(
                f"message must be a dict, got {type(message).__name__}; pass dict(message)"
            )
        raise InvalidMessage(f"message must be a dict, got {type(message).__name__}")
    # The common case inlined: a flat dict of str keys and scalar values.
    for key, item in message.items():
        if type(key) is not str:
            raise InvalidMessage(
                f"message has the key {key!r} of type {type(key).__name__}; keys must be str"
            )
        kind = type(item)
        if kind not in _SCALARS and (kind is not int or not _INT64_MIN <= item <= _INT64_MAX):
            _check_value(item, kind, "message", key, 2)
    return message


def _check_dict(value: dict[Any, Any], path: str, depth: int) -> None:
    for key, item in value.items():
        if type(key) is not str:
            raise InvalidMessage(
                f"{path} has the key {key!r} of type {type(key).__name__}; keys must be str"
            )
        kind = type(item)
        if kind in _SCALARS:
            continue
        _check_value(item, kind, path, key, depth + 1)


def _too_deep(where: str) -> InvalidMessage:
    return InvalidMessage(
        f"{where[:200]}... nests lists and dicts more than {MAX_MESSAGE_DEPTH} levels deep "
        "(a value that contains itself?)"
    )


def _check_value(item: Any, kind: type, path: str, key: object, depth: int) -> None:
    """Check ``item`` found at ``path[key]``; ``depth`` is its nesting level if a container."""
    where = f"{path}[{key!r}]"
    if kind is int:
        if not _INT64_MIN <= item <= _INT64_MAX:
            raise InvalidMessage(f"{where} = {item} does not fit in a signed 64-bit integer")
    elif kind is dict:
        if depth > MAX_MESSAGE_DEPTH:
            raise _too_deep(where)
        _check_dict(item, where, depth)
    elif kind is list or kind is tuple:
        if depth > MAX_MESSAGE_DEPTH:
            raise _too_deep(where)
        for index, element in enumerate(item):
            element_kind = type(element)
            if element_kind not in _SCALARS:
                _check_value(element, element_kind, where, index, depth + 1)
    elif isinstance(item, bool | str | bytes | float):
        return  # subclasses such as a str-based enum carry as their base type
    elif isinstance(item, int):
        _check_value(int(item), int, path, key, depth)
    elif isinstance(item, dict):
        _check_value(item, dict, path, key, depth)
    elif isinstance(item, list):
        _check_value(item, list, path, key, depth)
    else:
        raise InvalidMessage(
            f"{where} is of type {kind.__name__}, which a channel layer cannot carry; "
            f"allowed are {_ALLOWED_DESCRIPTION}"
        )


def check_size(size: int, limit: int) -> None:
    """Raise :class:`MessageTooLarge` when ``size`` encoded bytes are over ``limit``."""
    if size > limit:
        raise MessageTooLarge(
            f"message is {size:,} bytes encoded; the limit (max_message_size) is {limit:,} bytes"
        )


# -- capacity -----------------------------------------------------------------------------------


class CapacityTable:
    """Looks up the capacity of a channel.

    ``channel_capacity`` maps glob patterns (``"http.request"``, ``"chat.*"``) or compiled
    regular expressions to capacities, tried in order; the first match wins, else
    ``capacity``. A process-specific name is looked up by its part up to and including ``!``
    (so ``"specific.*!*"`` and ``"specific.*"`` both match every such channel); the count
    itself is kept per full channel name. ``what`` names the setting in error messages.
    """

    __slots__ = ("_cache", "_patterns", "default")

    def __init__(
        self,
        capacity: int = 100,
        channel_capacity: Mapping[str | re.Pattern[str], int] | None = None,
        *,
        what: str = "channel_capacity",
    ) -> None:
        self.default = positive_int("capacity", capacity)
        self._patterns: list[tuple[re.Pattern[str], int]] = []
        for pattern, value in (channel_capacity or {}).items():
            if isinstance(pattern, str):
                compiled = re.compile(fnmatch.translate(pattern))
            elif isinstance(pattern, re.Pattern):
                compiled = pattern
            else:
                raise ConfigurationError(
                    f"{what} keys must be glob strings or compiled regular "
                    f"expressions, got {type(pattern).__name__} {pattern!r}"
                )
            self._patterns.append((compiled, positive_int(f"{what}[{pattern!r}]", value)))
        self._cache: dict[str, int] = {}

    def __call__(self, channel: str) -> int:
        found = self._cache.get(channel)  # normal channels are cached under their own name
        if found is not None:
            return found
        key = non_local_name(channel)
        if key != channel:
            found = self._cache.get(key)  # process channels under their shared prefix
            if found is not None:
                return found
        found = self.default
        for pattern, value in self._patterns:
            if pattern.match(key):
                found = value
                break
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found


def positive_int(what: str, value: object) -> int:
    """Validate a configured count (``what`` names the setting in the message)."""
    if type(value) is not int or value < 1:
        raise ConfigurationError(f"{what} must be a positive int, got {value!r}")
    return value


def positive_seconds(what: str, value: object) -> float:
    """Validate a configured duration in seconds (``what`` names the setting in the message)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{what} must be a positive number of seconds, got {value!r}")
    if math.isinf(value) or math.isnan(value):
        raise ConfigurationError(f"{what} must be a finite number of seconds, got {value!r}")
    return float(value)


# -- delayed delivery -------------------------------------------------------------------------


def due_time(now: float, delay: float | timedelta | None, at: float | datetime | None) -> float:
    """When a delayed message becomes due, in seconds since the epoch.

    ``delay`` is seconds (or a timedelta) from ``now``; ``at`` is an absolute time (epoch
    seconds or an aware datetime). Give at most one. A time in the past is due at once.
    """
    if delay is not None and at is not None:
        raise InvalidDelay("give either delay= or at=, not both")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidDelay(
                f"delay must be seconds (int or float) or a timedelta, got {type(delay).__name__}"
            )
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidDelay(f"delay must be a finite number of seconds >= 0, got {delay!r}")
        return now + seconds
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise InvalidDelay("at= must be an aware datetime (with tzinfo), got a naive one")
        return at.timestamp()
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise InvalidDelay(f"at= must be epoch seconds or an aware datetime, got {at!r}")
    return float(at)
