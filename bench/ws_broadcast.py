"""WebSocket broadcast benchmark: one room, N real clients, the same uvicorn for every app.

Three servers, each in its own process running uvicorn on 127.0.0.1 (the client runs in this
process, so server and client each get one of the two cores):

- ``headrace``: the seed's chat consumer (``AsyncWebsocketConsumer``, group_add on connect,
  group_send on receive) on headrace with its in-memory layer;
- ``channels``: the very same consumer code on Channels 4 with its in-memory layer;
- ``floor``: a bare ASGI app that keeps a Python set of connections and sends each message to
  all of them — no channel layer, no consumer — the fastest a Python ASGI app can broadcast.
- ``headrace-redis`` (with ``--redis``): headrace's consumer on its Redis layer.

For each: N clients join the room, one sends 20 messages one after another (after 3 warm-up
rounds), and each round's figure is the time from the send until every one of the N clients has
received the message. Then, on a fresh server, ``--idle`` connections join the room and sit
idle; the server's RSS growth divided by their number is the memory per idle connection.

Clients connect without permessage-deflate (``--deflate`` turns it on), so the figures measure
the frameworks rather than zlib. Prints one JSON document.

    python bench/ws_broadcast.py                     # 1000 clients, 3000 idle, all apps
    python bench/ws_broadcast.py --clients 200 --idle 500 --rounds 10   # a quick look
    python bench/ws_broadcast.py --apps headrace,floor --redis   # + a private redis-server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# -- the servers (run with --serve) ---------------------------------------------------------


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _configure_django(layer: dict[str, Any]) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["127.0.0.1"],
        INSTALLED_APPS=[],
        CHANNEL_LAYERS={"default": layer},
        LOGGING_CONFIG=None,
    )
    django.setup()


def _chat_consumer(base: Any) -> Any:
    """The seed's ChatConsumer, on whichever AsyncWebsocketConsumer is given."""

    class ChatConsumer(base):  # type: ignore[misc, valid-type]
        async def connect(self) -> None:
            self.room = "room"
            await self.channel_layer.group_add(self.room, self.channel_name)
            await self.accept()

        async def disconnect(self, code: int) -> None:
            await self.channel_layer.group_discard(self.room, self.channel_name)

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            payload = json.loads(text_data or "")
            await self.channel_layer.group_send(
                self.room, {"type": "chat.message", "message": payload["message"]}
            )

        async def chat_message(self, event: dict[str, Any]) -> None:
            await self.send(text_data=json.dumps({"message": event["message"]}))

    return ChatConsumer


def _floor_app() -> Any:
    connections: set[Any] = set()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.connect":
                await send({"type": "websocket.accept"})
                connections.add(send)
            elif kind == "websocket.receive":
                payload = json.loads(message["text"])
                frame = {
                    "type": "websocket.send",
                    "text": json.dumps({"message": payload["message"]}),
                }
                for peer in list(connections):
                    await peer(frame)
            else:
                connections.discard(send)
                return

    return app


def serve(kind: str, port: int, redis_url: str | None) -> None:
    _raise_fd_limit()
    if kind == "floor":
        app = _floor_app()
    elif kind == "channels":
        _configure_django({"BACKEND": "channels.layers.InMemoryChannelLayer"})
        from channels.generic.websocket import AsyncWebsocketConsumer as ChannelsBase

        app = _chat_consumer(ChannelsBase).as_asgi()
    else:
        if kind == "headrace-redis":
            layer = {
                "BACKEND": "headrace.layers.redis.RedisChannelLayer",
                "CONFIG": {"hosts": [redis_url]},
            }
        else:
            layer = {"BACKEND": "headrace.layers.InMemoryChannelLayer"}
        _configure_django(layer)
        from headrace.generic.websocket import AsyncWebsocketConsumer

        app = _chat_consumer(AsyncWebsocketConsumer).as_asgi()
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws_ping_interval=None,
        backlog=4096,
    )


# -- the client -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Started:
    def __init__(self, kind: str, redis_url: str | None) -> None:
        self.kind = kind
        self.port = _free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        args = [sys.executable, __file__, "--serve", kind, "--port", str(self.port)]
        if redis_url:
            args += ["--redis-url", redis_url]
        self.process = subprocess.Popen(args, env=env)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError(f"{self.kind} server did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


DEFLATE = False


async def _open(url: str, n: int) -> list[Any]:
    from websockets.asyncio.client import connect

    clients: list[Any] = []
    batch = 100
    for start in range(0, n, batch):
        opened = await asyncio.gather(
            *(
                connect(
                    url,
                    compression="deflate" if DEFLATE else None,
                    proxy=None,
                    ping_interval=None,
                    open_timeout=30,
                    max_queue=None,
                )
                for _ in range(min(batch, n - start))
            )
        )
        clients.extend(opened)
    return clients


async def _close(clients: list[Any]) -> None:
    for start in range(0, len(clients), 200):
        await asyncio.gather(
            *(c.close() for c in clients[start : start + 200]), return_exceptions=True
        )


async def broadcast_rounds(url: str, n: int, rounds: int, warmup: int) -> list[float]:
    clients = await _open(url, n)
    remaining = 0
    done = asyncio.Event()
    expected = ""

    async def listen(client: Any) -> None:
        nonlocal remaining
        async for frame in client:
            if frame == expected:
                remaining -= 1
                if remaining == 0:
                    done.set()

    listeners = [asyncio.create_task(listen(c)) for c in clients]
    # Let the last joins reach the room: one message everybody must get.
    times: list[float] = []
    for i in range(warmup + rounds):
        expected = json.dumps({"message": f"round {i}"})
        remaining = n
        done.clear()
        started = time.perf_counter()
        await clients[0].send(expected)
        await asyncio.wait_for(done.wait(), 60)
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    for task in listeners:
        task.cancel()
    await _close(clients)
    return times


async def idle_memory(server: Started, url: str, n: int) -> float:
    before = _rss_kb(server.process.pid)
    clients = await _open(url, n)
    # One message through the room so every connection has completed its join.
    probe = clients[0]
    await probe.send(json.dumps({"message": "probe"}))
    for client in clients:
        await asyncio.wait_for(client.recv(), 60)
    after = _rss_kb(server.process.pid)
    await _close(clients)
    return (after - before) / n


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    _raise_fd_limit()
    kinds = [k for k in args.apps.split(",") if k]
    if args.redis:
        kinds.append("headrace-redis")
    results: dict[str, Any] = {}
    for kind in kinds:
        server = Started(kind, args.redis_url)
        try:
            await server.wait_ready()
            url = f"ws://127.0.0.1:{server.port}/ws/chat/room/"
            times = await broadcast_rounds(url, args.clients, args.rounds, args.warmup)
        finally:
            server.stop()
        server = Started(kind, args.redis_url)
        try:
            await server.wait_ready()
            url = f"ws://127.0.0.1:{server.port}/ws/chat/room/"
            per_conn_kb = await idle_memory(server, url, args.idle)
        finally:
            server.stop()
        results[kind] = {
            "p50_ms": round(statistics.median(times), 2),
            "p90_ms": round(_pct(times, 0.9), 2),
            "min_ms": round(min(times), 2),
            "idle_kb_per_connection": round(per_conn_kb, 1),
        }
        print(f"# {kind}: {results[kind]}", file=sys.stderr)
    floor = results.get("floor", {}).get("p50_ms")
    if floor:
        for figures in results.values():
            figures["p50_vs_floor"] = round(figures["p50_ms"] / floor, 2)
    return {
        "benchmark": "ws_broadcast",
        "clients": args.clients,
        "idle_connections": args.idle,
        "rounds": args.rounds,
        "permessage_deflate": args.deflate,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--apps", default="floor,headrace,channels")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--redis", action="store_true", help="also run headrace on Redis")
    parser.add_argument(
        "--deflate", action="store_true", help="clients negotiate permessage-deflate"
    )
    parser.add_argument(
        "--redis-url", help="an existing Redis to use (default: start a private redis-server)"
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.redis_url)
        return
    global DEFLATE
    DEFLATE = args.deflate
    redis_process = None
    if args.redis and not args.redis_url:
        redis_port = _free_port()
        redis_process = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        args.redis_url = f"redis://127.0.0.1:{redis_port}/0"
    try:
        print(json.dumps(asyncio.run(run(args)), indent=2))
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(10)


if __name__ == "__main__":
    main()
