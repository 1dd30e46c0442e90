"""The Redis layer on each deployment, against real servers the fixtures start: password and
ACL user in the URL, TLS, several independent hosts, Sentinel with a fail-over, and a
3-master Redis Cluster. (The whole conformance suite also runs on several hosts and on the
cluster: see tests/layer_backends.py.)"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis

from headrace.exceptions import LayerConnectionError
from headrace.layers.redis import RedisChannelLayer
from tests.redis_servers import (
    ACL_PASSWORD,
    ACL_USER,
    DEFAULT_PASSWORD,
    servers,
    wait_until,
)


async def receive(layer: RedisChannelLayer, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), 10)


async def exercise(sender: RedisChannelLayer, reader: RedisChannelLayer) -> None:
    """Point-to-point, process channels, groups across processes, delays and flush."""
    await sender.send("work.queue", {"type": "job", "n": 1})
    assert await receive(reader, "work.queue") == {"type": "job", "n": 1}
    members = [await reader.new_channel() for _ in range(3)]
    for index, member in enumerate(members):
        await sender.group_add(f"room{index}", member)
        await sender.group_add("everyone", member)
    await sender.group_add("everyone", "normal.member")
    await sender.group_send("everyone", {"type": "hello"})
    for member in [*members, "normal.member"]:
        assert await receive(reader, member) == {"type": "hello"}
    await sender.send(members[0], {"type": "later"}, delay=0)
    assert await receive(reader, members[0]) == {"type": "later"}


def prefix() -> str:
    return f"dep-{uuid.uuid4().hex[:10]}"


async def close(*layers: RedisChannelLayer) -> None:
    await layers[0].flush()
    for layer in layers:
        await layer.close()


# -- password and ACL -------------------------------------------------------------------------


async def test_acl_user_and_password_in_the_url(pytestconfig: pytest.Config) -> None:
    server = servers(pytestconfig).acl()
    name = prefix()
    user = RedisChannelLayer(
        hosts=[f"redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{server.port}/0"], prefix=name
    )
    default = RedisChannelLayer(
        hosts=[f"redis://:{DEFAULT_PASSWORD}@127.0.0.1:{server.port}/0"], prefix=name
    )
    try:
        await exercise(user, default)
    finally:
        await close(user, default)


async def test_wrong_password_is_a_clear_error_without_the_secret(
    pytestconfig: pytest.Config,
) -> None:
    server = servers(pytestconfig).acl()
    layer = RedisChannelLayer(
        hosts=[f"redis://{ACL_USER}:not-the-password@127.0.0.1:{server.port}/0"], prefix=prefix()
    )
    try:
        with pytest.raises(LayerConnectionError, match="refused the credentials") as raised:
            await asyncio.wait_for(layer.send("x", {"type": "x"}), 10)
        assert "not-the-password" not in str(raised.value)
    finally:
        await layer.close()


# -- TLS --------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_tls_with_a_certificate_checked_against_its_ca(pytestconfig: pytest.Config) -> None:
    server, ca = servers(pytestconfig).tls()
    host = {"address": f"rediss://127.0.0.1:{server.port}/0", "ssl_ca_certs": str(ca)}
    name = prefix()
    sender = RedisChannelLayer(hosts=[host], prefix=name)
    reader = RedisChannelLayer(hosts=[host], prefix=name)
    try:
        await exercise(sender, reader)
    finally:
        await close(sender, reader)


@pytest.mark.slow
async def test_tls_refuses_an_unknown_certificate(pytestconfig: pytest.Config) -> None:
    server, _ = servers(pytestconfig).tls()
    layer = RedisChannelLayer(hosts=[f"rediss://127.0.0.1:{server.port}/0"], prefix=prefix())
    try:
        with pytest.raises(LayerConnectionError, match="certificate"):
            await asyncio.wait_for(layer.send("x", {"type": "x"}), 10)
    finally:
        await layer.close()


# -- several independent hosts ----------------------------------------------------------------


@pytest.mark.slow
async def test_several_hosts_share_the_keys_and_readers_read_where_writers_write(
    pytestconfig: pytest.Config,
) -> None:
    shards = servers(pytestconfig).several()
    urls = [server.url for server in shards]
    name = prefix()
    sender = RedisChannelLayer(hosts=urls, prefix=name)
    reader = RedisChannelLayer(hosts=list(reversed(urls)), prefix=name)  # order is irrelevant
    try:
        await exercise(sender, reader)
        for number in range(60):
            await sender.send(f"spread.{number}", {"type": "n", "n": number})
        holding = []
        for server in shards:
            with server.client() as client:
                holding.append(len(list(client.scan_iter(match=f"{name}:c:spread.*"))))
        assert sum(holding) == 60
        assert all(count > 0 for count in holding)  # a consistent hash spreads them
        for number in range(60):
            assert (await receive(reader, f"spread.{number}"))["n"] == number
    finally:
        await close(sender, reader)
    for server in shards:
        with server.client() as client:
            assert list(client.scan_iter(match=f"{name}:*")) == []


# -- Sentinel -----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sentinel_follows_a_fail_over_and_keeps_working(
    pytestconfig: pytest.Config,
) -> None:
    master, replica, sentinel = servers(pytestconfig).sentinel()
    host = {"sentinels": [("127.0.0.1", sentinel.port)], "master_name": "mymaster"}
    name = prefix()
    sender = RedisChannelLayer(hosts=[host], prefix=name, block_timeout=0.5)
    reader = RedisChannelLayer(hosts=[host], prefix=name, block_timeout=0.5)
    try:
        await exercise(sender, reader)
        with sentinel.client() as client:
            wait_until(
                lambda: client.execute_command("SENTINEL", "REPLICAS", "mymaster"),
                "the sentinel to discover the replica",
                timeout=30,
            )
            client.execute_command("SENTINEL", "FAILOVER", "mymaster")
        wait_until(
            lambda: replica.client().info("replication")["role"] == "master",
            "the replica to be promoted",
            timeout=30,
        )
        channel = await reader.new_channel()
        waiting = asyncio.create_task(reader.receive(channel))
        for _attempt in range(200):  # writes reach the new master within a bounded time
            try:
                await sender.send(channel, {"type": "after.failover"})
                break
            except LayerConnectionError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("no send succeeded after the fail-over")
        assert await asyncio.wait_for(waiting, 30) == {"type": "after.failover"}
        with replica.client() as client:  # the new master holds the layer's keys now
            client.set(f"{name}:probe", b"1", ex=60)
    finally:
        await close(sender, reader)
    assert master.process is not None


# -- Redis Cluster ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_cluster_spreads_keys_over_the_masters_and_flushes_them_all(
    pytestconfig: pytest.Config,
) -> None:
    nodes = servers(pytestconfig).cluster()
    name = prefix()
    sender = RedisChannelLayer(hosts=[nodes[0].url], cluster=True, prefix=name)
    reader = RedisChannelLayer(
        hosts=[("127.0.0.1", nodes[1].port), ("127.0.0.1", nodes[2].port)],
        cluster=True,
        prefix=name,
    )
    try:
        await exercise(sender, reader)
        for number in range(40):
            await sender.send(f"spread.{number}", {"type": "n", "n": number})
        holding = [len(list(node.client().scan_iter(match=f"{name}:*"))) for node in nodes]
        assert sum(1 for count in holding if count) >= 2
        for number in range(40):
            assert (await receive(reader, f"spread.{number}"))["n"] == number
    finally:
        await close(sender, reader)
    for node in nodes:
        with node.client() as client:
            assert list(client.scan_iter(match=f"{name}:*")) == []


def test_every_cluster_key_of_one_bucket_shares_a_slot() -> None:
    from redis.crc import key_slot

    from headrace.layers.redis.topology import Topology

    topology = Topology(
        ["redis://127.0.0.1:7000"], prefix="asgi", cluster=True, cluster_buckets=8, common={}
    )
    for tag in topology.tags:
        slots = {
            key_slot(f"{tag}{kind}:{owner}".encode())
            for kind in "cimnagd"
            for owner in ("chat.room", "specific.abc!", "g1")
        }
        assert len(slots) == 1
    assert len({key_slot(tag.encode()) for tag in topology.tags}) == 8


@pytest.mark.slow
def test_a_lost_cluster_node_is_a_clear_error(pytestconfig: pytest.Config) -> None:
    layer = RedisChannelLayer(
        hosts=["redis://127.0.0.1:1/0"], cluster=True, prefix=prefix(), connect_timeout=0.2
    )

    async def send() -> None:
        try:
            await layer.send("x", {"type": "x"})
        finally:
            await layer.close()

    with pytest.raises(LayerConnectionError):
        asyncio.run(send())
    assert not isinstance(LayerConnectionError(), redis.RedisError)
