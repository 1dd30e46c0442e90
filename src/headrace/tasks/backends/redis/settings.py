"""The checked ``OPTIONS`` of the Redis task backend (see :mod:`.backend` for each key)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from headrace.exceptions import ConfigurationError, HeadraceError
from headrace.layers.redis.config import RedisConfig

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_PREFIX",
    "OWN_OPTIONS",
    "RedisTaskSettings",
    "TaskStoreUnavailable",
    "layer_servers",
]

DEFAULT_PREFIX: Final = "headrace-tasks"
DEFAULT_LEASE: Final = 30.0
DEFAULT_MAX_DELIVERIES: Final = 3
OWN_OPTIONS: Final = (
    "hosts",
    "cluster",
    "layer",
    "prefix",
    "lease",
    "heartbeat_interval",
    "max_deliveries",
    "block_timeout",
    "connect_timeout",
)


class TaskStoreUnavailable(HeadraceError):
    """Redis could not be reached (within ``connect_timeout``): nothing was stored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisTaskSettings:
    """The checked ``OPTIONS`` of a :class:`RedisTaskBackend` (see the module docstring)."""

    hosts: tuple[Any, ...] = (("localhost", 6379),)
    cluster: bool = False
    layer: str | None = None
    prefix: str = DEFAULT_PREFIX
    lease: float = DEFAULT_LEASE
    heartbeat_interval: float = DEFAULT_LEASE / 6
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    block_timeout: float = 5.0
    connect_timeout: float = 5.0

    @classmethod
    def from_options(cls, alias: str, options: Mapping[str, Any]) -> RedisTaskSettings:
        """Check ``options``; ConfigurationError lists every mistake."""
        where = f"TASKS[{alias!r}]['OPTIONS']"
        problems: list[str] = []

        def seconds(name: str, default: float) -> float:
            value = options.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                problems.append(f"{where}[{name!r}] must be a positive number, got {value!r}")
                return default
            return float(value)

        lease = seconds("lease", DEFAULT_LEASE)
        heartbeat = seconds("heartbeat_interval", lease / 6)
        if heartbeat >= lease:
            problems.append(
                f"{where}['heartbeat_interval'] ({heartbeat:g}) must be shorter than the lease "
                f"({lease:g}), or leases lapse under a healthy worker"
            )
        deliveries = options.get("max_deliveries", DEFAULT_MAX_DELIVERIES)
        if type(deliveries) is not int or deliveries < 1:
            problems.append(f"{where}['max_deliveries'] must be an int >= 1, got {deliveries!r}")
            deliveries = DEFAULT_MAX_DELIVERIES
        layer = options.get("layer")
        redis_keys: dict[str, Any] = {"prefix": options.get("prefix", DEFAULT_PREFIX)}
        if layer is not None:
            if "hosts" in options or "cluster" in options:
                problems.append(f"{where}: give 'layer' or 'hosts'/'cluster', not both")
            try:
                redis_keys.update(layer_servers(layer))
            except ConfigurationError as error:
                problems.append(f"{where}['layer']: {error}")
        else:
            for name in ("hosts", "cluster"):
                if name in options:
                    redis_keys[name] = options[name]
        try:
            checked = RedisConfig.from_settings(redis_keys, source=where)
        except ConfigurationError as error:
            problems.extend(error.problems or [str(error)])
            checked = RedisConfig()
        if problems:
            raise ConfigurationError("; ".join(problems), problems=problems)
        return cls(
            hosts=tuple(checked.hosts),
            cluster=checked.cluster,
            layer=layer,
            prefix=checked.prefix,
            lease=lease,
            heartbeat_interval=heartbeat,
            max_deliveries=deliveries,
            block_timeout=seconds("block_timeout", 5.0),
            connect_timeout=seconds("connect_timeout", 5.0),
        )


def layer_servers(alias: object) -> dict[str, Any]:
    from django.conf import settings

    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    if not isinstance(alias, str) or alias not in layers:
        raise ConfigurationError(f"no CHANNEL_LAYERS alias {alias!r} (have: {sorted(layers)})")
    entry = layers[alias]
    if not str(entry.get("BACKEND", "")).endswith("RedisChannelLayer"):
        raise ConfigurationError(
            f"CHANNEL_LAYERS[{alias!r}] is {entry.get('BACKEND')!r}, not a Redis channel layer"
        )
    config = dict(entry.get("CONFIG") or {})
    return {name: config[name] for name in ("hosts", "cluster") if name in config}
