"""One connection to one Redis server, and what its errors mean for the layer."""

from __future__ import annotations

from typing import Any, Final

from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from headrace.exceptions import ChannelLayerError, LayerConnectionError
from headrace.layers.redis.scripts import SCRIPTS

__all__ = [
    "CONNECTION_ERRORS",
    "Command",
    "Link",
    "Message",
    "never_sent",
    "raise_first",
    "safe_to_repeat",
    "translate",
]

Message = dict[str, Any]
Command = tuple[Any, ...]

CONNECTION_ERRORS: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    ClusterDownError,
    OSError,
)


class Link:
    """A connection of its own to one server, for one batcher or one reader.

    Through redis-py's connection API (which connects, speaks TLS, authenticates and asks
    Sentinel for the master) but not its client layer: no pool checkout, retry wrapper or
    reply callbacks per command, which halves the client's cost of a round trip. A Redis
    Cluster client has no single connection: there the client runs the commands.
    """

    __slots__ = ("client", "connection")

    def __init__(self, client: Any) -> None:
        self.client = client
        pool = getattr(client, "connection_pool", None)
        self.connection: Any = None if pool is None else pool.make_connection()

    async def execute(self, commands: list[Command]) -> list[Any]:
        """Run ``commands`` in one write; their results, error replies included."""
        connection = self.connection
        if connection is None:
            return await self._execute_on_client(commands)
        # The connection reconnects by itself when needed, and drops itself on any failure
        # (or cancellation) half-way, so it is never left with replies unread.
        await connection.send_packed_command(
            connection.pack_commands(commands) if len(commands) > 1 else
            connection.pack_command(*commands[0]),
            check_health=False,
        )  # fmt: skip
        results: list[Any] = []
        for _ in commands:
            try:
                results.append(await connection.read_response())
            except ResponseError as error:
                results.append(error)
        return results

    async def load_scripts(self) -> None:
        """Load the layer's scripts where this link's commands go (every node of a cluster;
        after a Sentinel fail-over, the new master)."""
        if self.connection is None:
            for script in SCRIPTS:
                await self.client.script_load(script.source)
        else:
            raise_first(await self.execute([("SCRIPT", "LOAD", s.source) for s in SCRIPTS]))

    async def _execute_on_client(self, commands: list[Command]) -> list[Any]:
        if len(commands) == 1:
            try:
                return [await self.client.execute_command(*commands[0])]
            except ResponseError as error:
                return [error]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))

    async def aclose(self) -> None:
        if self.connection is not None:
            await self.connection.disconnect()


def never_sent(error: BaseException) -> bool:
    """True when a command failed before reaching the server (so retrying cannot double it)."""
    text = str(error).lower()
    if "certificate" in text or "ssl" in text:
        return False  # a TLS failure will not go away by trying again
    return any(
        sign in text
        for sign in ("connecting to", "connection refused", "loading", "cannot be connected")
    )


#: Commands whose repetition leaves Redis as one run would (idempotent writes and reads).
_REPEATABLE: Final = frozenset(
    {"SET", "HSET", "HDEL", "PEXPIRE", "SADD", "SREM", "EXISTS", "INFO", "LLEN", "SCRIPT"}
)
#: Inbox entries whose repetition is harmless: a membership added or removed twice.
_MEMBERSHIP_ENTRIES: Final = frozenset({ord("A"), ord("R")})


def safe_to_repeat(commands: list[Command]) -> bool:
    """True when running ``commands`` twice has the effect of running them once, so a batch
    that met a dead connection may be sent again on a fresh one although it may have run.

    Group membership changes qualify (an inbox told twice that a channel joined a group
    knows the same); sends, pops and scripts do not (a message could arrive twice).
    """
    for command in commands:
        name = command[0]
        if name == "RPUSH":
            if not all(
                isinstance(entry, bytes) and entry[:1] and entry[0] in _MEMBERSHIP_ENTRIES
                for entry in command[2:]
            ):
                return False
        elif name not in _REPEATABLE:
            return False
    return True


def raise_first(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, Exception):
            raise translate(result)


def translate(error: Exception) -> Exception:
    if isinstance(error, ChannelLayerError):
        return error
    if isinstance(error, CONNECTION_ERRORS):
        return LayerConnectionError(f"Redis connection failed: {error}")
    if isinstance(error, RedisError):
        return ChannelLayerError(f"Redis refused a channel layer command: {error}")
    return error
