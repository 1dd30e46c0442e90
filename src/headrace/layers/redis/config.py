"""The Redis layer's configuration: a frozen :class:`RedisConfig` built from ``CONFIG``.

Building one checks every key and connects to nothing, so ``manage.py check`` reports a bad
Redis ``CONFIG`` at start-up, naming the alias and the key, instead of the first request
failing. The keys shared with channels_redis (``hosts``, ``prefix``, ``expiry``,
``group_expiry``, ``capacity``, ``channel_capacity``, ``symmetric_encryption_keys``) mean the
same; see :class:`RedisConfig` for each.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final

from headrace.exceptions import ConfigurationError
from headrace.layers import rules
from headrace.layers.config import KeyCheck, LayerConfig
from headrace.layers.redis.topology import _host_spec

__all__ = ["HostEntry", "RedisConfig"]

#: One configured server as written in CONFIG: a URL, a ``(host, port)`` pair, or a mapping of
#: redis-py arguments (``{"address": url, ...}``; ``sentinels`` and ``master_name`` for Sentinel).
HostEntry = str | tuple[str, int] | Mapping[str, Any]

_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_INSTALL_HINT: Final = "pip install 'headrace[redis]'"


def _hosts(what: str, value: object) -> tuple[HostEntry, ...]:
    if value is None:
        return (("localhost", 6379),)
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence) or not value:
        raise ConfigurationError(
            f"{what} must be a non-empty list of URLs, (host, port) pairs or dicts, got {value!r}"
        )
    problems: list[str] = []
    entries: list[HostEntry] = []
    for index, entry in enumerate(value):
        try:
            _host_spec(entry)  # the topology's own reading of an entry
        except (ConfigurationError, TypeError, ValueError) as error:
            problems.append(f"{what}[{index}]: {error}")
            continue
        if isinstance(entry, Mapping):
            entries.append(MappingProxyType(dict(entry)))
        elif isinstance(entry, str):
            entries.append(entry)
        else:
            host, port = entry
            entries.append((host, port))
    if problems:
        raise ConfigurationError("; ".join(problems), problems=problems)
    return tuple(entries)


def _prefix(what: str, value: object) -> str:
    if not isinstance(value, str) or not _PREFIX_RE.fullmatch(value):
        raise ConfigurationError(
            f"{what} must be 1-64 ASCII letters, digits, '.', '-' or '_', got {value!r}"
        )
    return value


def _encryption_keys(what: str, value: object) -> tuple[str | bytes, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ConfigurationError(
            f"{what} must be a non-empty list of keys (the first encrypts), got {value!r}"
        )
    for index, key in enumerate(value):
        if not isinstance(key, str | bytes) or not key:
            raise ConfigurationError(f"{what}[{index}] must be a non-empty str, got {key!r}")
    if importlib.util.find_spec("cryptography") is None:
        raise ConfigurationError(
            f"{what} needs the cryptography package, which is not installed: {_INSTALL_HINT}"
        )
    return tuple(value)


def _flag(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{what} must be True or False, got {value!r}")
    return value


def _cluster_buckets(what: str, value: object) -> int:
    if type(value) is not int or not 1 <= value <= 1024:
        raise ConfigurationError(f"{what} must be an int from 1 to 1024, got {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConfig(LayerConfig):
    """How a :class:`~headrace.layers.redis.RedisChannelLayer` connects and keeps its keys.

    Besides the keys every layer shares (``expiry``, ``group_expiry``, ``capacity``,
    ``channel_capacity``, ``max_message_size``):
    """

    #: Servers: URLs (``redis://``, ``rediss://``, ``unix://``), ``(host, port)`` pairs or
    #: mappings of redis-py arguments; a mapping with ``sentinels`` and ``master_name`` (and
    #: ``sentinel_kwargs``) for Sentinel. Several hosts are independent shards chosen by a
    #: consistent hash; with ``cluster`` they are start-up nodes of one Redis Cluster.
    hosts: tuple[HostEntry, ...] = (("localhost", 6379),)
    #: Every key starts with it; ``flush()`` deletes only those.
    prefix: str = "asgi"
    #: Encrypt messages with Fernet: the first key encrypts, every key decrypts (rotate by
    #: putting the new key first). Needs ``cryptography`` (in ``headrace[redis]``).
    symmetric_encryption_keys: tuple[str | bytes, ...] | None = None
    #: ``hosts`` are start-up nodes of a Redis Cluster; ``cluster_buckets`` hash tags spread
    #: the keys over its masters.
    cluster: bool = False
    cluster_buckets: int = 8
    #: How often a reading process proves it is alive (seconds).
    heartbeat_interval: float = 10.0
    #: How long a blocking pop waits before it is issued again (seconds).
    block_timeout: float = 5.0
    #: How long a command keeps trying to connect before LayerConnectionError (seconds).
    connect_timeout: float = 5.0

    key_checks: ClassVar[Mapping[str, KeyCheck]] = {
        **LayerConfig.key_checks,
        "hosts": _hosts,
        "prefix": _prefix,
        "symmetric_encryption_keys": _encryption_keys,
        "cluster": _flag,
        "cluster_buckets": _cluster_buckets,
        "heartbeat_interval": rules.positive_seconds,
        "block_timeout": rules.positive_seconds,
        "connect_timeout": rules.positive_seconds,
    }

    def combined_problems(self) -> list[str]:
        specs = [_host_spec(entry) for entry in self.hosts]
        if self.cluster:
            if any(spec.sentinels for spec in specs):
                return [f"{self.name_of('cluster')} = True cannot be combined with Sentinel hosts"]
            return []
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            return [f"{self.name_of('hosts')}: the same Redis host is listed twice in {names}"]
        return []
