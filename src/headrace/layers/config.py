"""What a channel layer is configured with, and what it can do, as frozen values.

A ``CHANNEL_LAYERS`` entry's ``CONFIG`` (or ``TEST_CONFIG``) becomes a :class:`LayerConfig`
(or a backend's subclass of it, such as the Redis layer's ``RedisConfig``) before any layer
exists. Building one checks every key and connects to nothing, so the system check
(``manage.py check``, see :mod:`headrace.checks`) can report every mistake of every alias at
start-up, each named by alias and key::

    CHANNEL_LAYERS['default']['CONFIG']['capacity'] must be a positive int, got -1

``config.using(capacity=500)`` returns a copy, checked like the original.

:class:`Capabilities` says what a backend supports beyond send/receive. Callers read it instead
of guessing from the class or from the methods it happens to have: consumers with ``groups``
need ``groups``, ``runserver`` runs its workers in-process only on an ``in_process`` layer, and
``rundelay`` sweeps only a layer that ``moves_due``. :func:`capabilities_of` also answers for
layers written for Channels, from their ``extensions`` list.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from headrace.exceptions import ConfigurationError
from headrace.layers import rules

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Capabilities", "LayerConfig", "capabilities_of"]

#: Default limit of one encoded message: 1 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024

#: Checks one key: called with the key's name for messages and its value; returns the value
#: to keep (normalized) or raises ConfigurationError naming the key.
KeyCheck = Callable[[str, Any], Any]

CapacityPatterns = tuple[tuple[str | re.Pattern[str], int], ...]


def _channel_capacity(what: str, value: object) -> CapacityPatterns:
    """A mapping (or pairs) of glob string or compiled regex -> capacity, kept as pairs."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, tuple | list) and all(
        isinstance(pair, tuple | list) and len(pair) == 2 for pair in value
    ):
        pairs = [tuple(pair) for pair in value]
    else:
        raise ConfigurationError(
            f"{what} must be a dict of glob pattern or compiled regex -> capacity, "
            f"got {type(value).__name__}"
        )
    # The capacity table is the one place that knows what a valid pattern is.
    rules.CapacityTable(1, dict(pairs), what=what)
    return tuple((pattern, count) for pattern, count in pairs)


def _max_message_size(what: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ConfigurationError(f"{what} must be a positive int (bytes), got {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerConfig:
    """The configuration every backend shares; the in-memory layer's is exactly this.

    Build it from a ``CONFIG`` dict with :meth:`from_settings`, or directly; copy it with
    :meth:`using`. Either way every key is checked, and a bad value raises
    :class:`~headrace.exceptions.ConfigurationError` whose ``problems`` list each mistake.
    """

    expiry: float = 60.0  #: seconds a message may wait unread
    group_expiry: float = 86400.0  #: seconds a membership lasts after the last group_add
    capacity: int = 100  #: messages a channel holds before send() raises ChannelFull
    #: (glob pattern or compiled regex, capacity) pairs; the first match wins
    channel_capacity: CapacityPatterns = ()
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE  #: largest encoded message, in bytes
    #: Where the values came from, for messages: ``CHANNEL_LAYERS['default']['CONFIG']``.
    source: str = field(default="", repr=False, compare=False)

    #: How each key is checked; a subclass extends this with its own keys.
    key_checks: ClassVar[Mapping[str, KeyCheck]] = {
        "expiry": rules.positive_seconds,
        "group_expiry": rules.positive_seconds,
        "capacity": rules.positive_int,
        "channel_capacity": _channel_capacity,
        "max_message_size": _max_message_size,
    }

    def __post_init__(self) -> None:
        problems: list[str] = []
        for key, check in self.key_checks.items():
            try:
                object.__setattr__(self, key, check(self.name_of(key), getattr(self, key)))
            except ConfigurationError as error:
                problems.extend(error.problems)
        if not problems:
            problems = self.combined_problems()
        if problems:
            raise ConfigurationError("; ".join(problems), problems=problems)

    def combined_problems(self) -> list[str]:
        """Mistakes of several keys together (each key alone is fine); none here."""
        return []

    def name_of(self, key: str) -> str:
        """How messages name ``key``: with its alias when the values came from settings."""
        return f"{self.source}[{key!r}]" if self.source else key

    def using(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, checked like the original."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The keys a ``CONFIG`` dict may hold for this configuration."""
        return tuple(cls.key_checks)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, source: str = "") -> Self:
        """The configuration in ``settings`` (a ``CONFIG`` dict), every key checked.

        ``source`` names the dict in messages (``CHANNEL_LAYERS['chat']['CONFIG']``). Raises
        ConfigurationError listing every mistake, unknown keys included.
        """
        known = cls.keys()
        unknown = sorted(str(key) for key in settings if key not in known)
        problems: list[str] = []
        if unknown:
            problems.append(
                f"{source + ' has ' if source else ''}unknown CONFIG keys: {', '.join(unknown)}; "
                f"the accepted keys are {', '.join(known)}"
            )
        try:
            config = cls(source=source, **{k: v for k, v in settings.items() if k in known})
        except ConfigurationError as error:
            problems.extend(error.problems)
        if problems:
            raise ConfigurationError("; ".join(problems), problems=problems)
        return config


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a backend can do beyond send/receive/new_channel. Callers read these flags."""

    groups: bool = False  #: group_add, group_discard and group_send work
    flush: bool = False  #: flush() empties what the layer owns
    delay: bool = False  #: send(..., delay=/at=) and group_send(..., delay=/at=) work
    #: Messages never leave this process: another process cannot read them (so runserver
    #: runs the routed background channels' workers itself).
    in_process: bool = False
    #: Delayed messages live outside the process and move_due() delivers those already due,
    #: whoever scheduled them (so a rundelay process can sweep them).
    moves_due: bool = False

    @property
    def extensions(self) -> list[str]:
        """The Channels layer specification's ``extensions`` list for these flags."""
        return [name for name in ("groups", "flush", "delay") if getattr(self, name)]


def capabilities_of(layer: object) -> Capabilities:
    """``layer.capabilities``; for a layer written for Channels, what its ``extensions`` say."""
    found = getattr(layer, "capabilities", None)
    if isinstance(found, Capabilities):
        return found
    extensions = set(getattr(layer, "extensions", None) or ())
    return Capabilities(
        groups="groups" in extensions,
        flush="flush" in extensions,
        delay="delay" in extensions,
    )
