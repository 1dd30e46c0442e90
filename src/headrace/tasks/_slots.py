"""Building frozen, slotted dataclass values fast (the stores' and results' hot path).

A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__``, which looks the
name up on every call; a slot's own descriptor sets it about three times faster. A job has 25
fields and is copied on every move, so this is a large share of a no-op job's cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["slot_setters"]


def slot_setters(cls: type, names: tuple[str, ...]) -> dict[str, Callable[[Any, Any], None]]:
    """The ``__set__`` of each named slot of ``cls`` (found along its MRO): it writes the
    slot whatever ``__setattr__`` says, as ``object.__setattr__`` would."""
    setters: dict[str, Callable[[Any, Any], None]] = {}
    for name in names:
        for klass in cls.__mro__:
            descriptor = klass.__dict__.get(name)
            if descriptor is not None:
                if not hasattr(descriptor, "__set__") or name not in getattr(
                    klass, "__slots__", ()
                ):
                    raise TypeError(f"{cls.__qualname__}.{name} is not a slot")
                setters[name] = descriptor.__set__
                break
        else:
            raise TypeError(f"{cls.__qualname__} has no slot {name!r}")
    return setters
