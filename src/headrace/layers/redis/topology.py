"""Where the Redis layer's keys live: servers, shards and the consistent hash between them.

A :class:`Topology` is built once from CONFIG (``hosts``, ``cluster``) and is independent of
event loops; :meth:`Topology.connect` makes the clients for one event loop (redis-py's asyncio
connections belong to the loop that opened them).

Deployments:

- one host (a URL, ``(host, port)`` or a dict of redis-py keyword arguments): one shard;
- Sentinel (a dict with ``sentinels`` and ``master_name``): one shard, on whichever server
  the sentinels name as master (redis-py follows a fail-over);
- several independent hosts: one shard per host; a key's owner (channel, group or process
  name) is placed by a consistent hash ring, so every reader reads where writers write and
  adding a host moves only about 1/N of the owners;
- Redis Cluster (``cluster=True``; ``hosts`` are start-up nodes): ``cluster_buckets`` shards
  on one cluster client, each a hash tag, so every script touches a single slot.
"""

from __future__ import annotations

import bisect
import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from headrace.exceptions import ConfigurationError
from headrace.layers.redis.layout import Keys

__all__ = ["Connections", "HostSpec", "Topology"]

_POINTS_PER_HOST: Final = 160
_CACHE_LIMIT: Final = 50_000


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One configured server (or Sentinel set): how to connect, and a stable name for hashing."""

    name: str
    url: str | None = None
    kwargs: tuple[tuple[str, Any], ...] = ()
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_kwargs: tuple[tuple[str, Any], ...] = ()


def _host_spec(entry: object) -> HostSpec:
    if isinstance(entry, str):
        if not entry.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"Redis host URL {entry!r} must start with redis://, rediss:// or unix://"
            )
        return HostSpec(name=entry.split("@")[-1], url=entry)
    if isinstance(entry, Sequence) and len(entry) == 2:
        host, port = entry
        if not isinstance(host, str) or not isinstance(port, int):
            raise ConfigurationError(f"a Redis host pair must be (str, int), got {entry!r}")
        return HostSpec(name=f"{host}:{port}", kwargs=(("host", host), ("port", port)))
    if isinstance(entry, Mapping):
        options = dict(entry)
        if "sentinels" in options:
            sentinels = tuple((str(h), int(p)) for h, p in options.pop("sentinels"))
            master = options.pop("master_name", None)
            if not sentinels or not isinstance(master, str):
                raise ConfigurationError(
                    "a Sentinel host needs 'sentinels': [(host, port), ...] and 'master_name'"
                )
            sentinel_kwargs = tuple(sorted(dict(options.pop("sentinel_kwargs", {})).items()))
            return HostSpec(
                name=f"sentinel:{master}",
                sentinels=sentinels,
                master_name=master,
                sentinel_kwargs=sentinel_kwargs,
                kwargs=tuple(sorted(options.items())),
            )
        address = options.pop("address", None)
        if address is not None:
            spec = _host_spec(address)
            return HostSpec(
                name=spec.name, url=spec.url, kwargs=spec.kwargs + tuple(sorted(options.items()))
            )
        host = options.get("host", "localhost")
        port = options.get("port", 6379)
        return HostSpec(name=f"{host}:{port}", kwargs=tuple(sorted(options.items())))
    raise ConfigurationError(
        f"a Redis host must be a URL, a (host, port) pair or a dict, got {entry!r}"
    )


class Connections:
    """The clients of one event loop: one per host (or one cluster client)."""

    __slots__ = ("clients", "sentinels")

    def __init__(self, clients: list[Any], sentinels: list[Sentinel]) -> None:
        self.clients = clients
        self.sentinels = sentinels

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
        for sentinel in self.sentinels:
            for connection in sentinel.sentinels:
                await connection.aclose()


class Topology:
    """The configured servers and the mapping from a key's owner to a shard."""

    def __init__(
        self,
        hosts: object,
        *,
        prefix: str,
        cluster: bool,
        cluster_buckets: int,
        common: Mapping[str, Any],
    ) -> None:
        if hosts is None:
            hosts = [("localhost", 6379)]
        if isinstance(hosts, str | Mapping) or not isinstance(hosts, Sequence) or not hosts:
            raise ConfigurationError(
                f"hosts must be a non-empty list of URLs, (host, port) pairs or dicts, "
                f"got {hosts!r}"
            )
        self.hosts = [_host_spec(entry) for entry in hosts]
        self.cluster = cluster
        self.common = dict(common)
        if cluster:
            if type(cluster_buckets) is not int or not 1 <= cluster_buckets <= 1024:
                raise ConfigurationError(
                    f"cluster_buckets must be an int from 1 to 1024, got {cluster_buckets!r}"
                )
            if any(spec.sentinels for spec in self.hosts):
                raise ConfigurationError("cluster=True cannot be combined with Sentinel hosts")
            self.tags = [f"{prefix}:{{{prefix}.{n}}}:" for n in range(cluster_buckets)]
            self.client_of = [0] * cluster_buckets
        else:
            names = [spec.name for spec in self.hosts]
            if len(set(names)) != len(names):
                raise ConfigurationError(f"the same Redis host is listed twice in {names}")
            self.tags = [f"{prefix}:"] * len(self.hosts)
            self.client_of = list(range(len(self.hosts)))
        self.shards = len(self.tags)
        self.keys = [Keys(tag) for tag in self.tags]  # the keys of each shard
        self._ring: list[int] = []
        self._ring_shard: list[int] = []
        if not cluster and self.shards > 1:
            points = sorted(
                (_hash64(f"{spec.name}#{n}"), index)
                for index, spec in enumerate(self.hosts)
                for n in range(_POINTS_PER_HOST)
            )
            self._ring = [point for point, _ in points]
            self._ring_shard = [index for _, index in points]
        self._cache: dict[str, int] = {}

    def shard_of(self, owner: str) -> int:
        """The shard holding the keys of ``owner`` (a channel, group or process name)."""
        if self.shards == 1:
            return 0
        found = self._cache.get(owner)
        if found is None:
            if self.cluster:
                found = zlib.crc32(owner.encode()) % self.shards
            else:
                position = bisect.bisect(self._ring, _hash64(owner)) % len(self._ring)
                found = self._ring_shard[position]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[owner] = found
        return found

    def connect(self) -> Connections:
        """New clients for the running event loop (they connect lazily)."""
        common = self.common
        if self.cluster:
            first = self.hosts[0]
            options = {**common, **dict(first.kwargs)}
            if first.url is not None:
                cluster = RedisCluster.from_url(first.url, **options)
            else:
                nodes = [
                    ClusterNode(dict(spec.kwargs)["host"], dict(spec.kwargs)["port"])
                    for spec in self.hosts
                ]
                options = {k: v for k, v in options.items() if k not in ("host", "port")}
                cluster = RedisCluster(startup_nodes=nodes, **options)
            return Connections([cluster], [])
        clients: list[Any] = []
        sentinels: list[Sentinel] = []
        for spec in self.hosts:
            options = {**common, **dict(spec.kwargs)}
            if spec.sentinels:
                sentinel = Sentinel(  # type: ignore[no-untyped-call]
                    list(spec.sentinels), sentinel_kwargs=dict(spec.sentinel_kwargs), **options
                )
                sentinels.append(sentinel)
                clients.append(sentinel.master_for(spec.master_name))
            elif spec.url is not None:
                clients.append(aioredis.Redis.from_url(spec.url, **options))
            else:
                clients.append(aioredis.Redis(**options))
        return Connections(clients, sentinels)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
