"""Channel layer benchmark: point-to-point throughput, round trip, and group fan-out.

Runs any layer given by dotted path and JSON config, and prints JSON. With no ``--layer``, it
runs headrace's in-memory layer and, when the ``bench`` extra is installed, Channels'
``InMemoryChannelLayer`` in the same run, and prints the ratios between them.

    python bench/layer.py                                  # the default comparison
    python bench/layer.py --layer headrace.layers.InMemoryChannelLayer --config '{"capacity": 100}'
    python bench/layer.py --quick                          # fewer rounds, for a smoke test
    python bench/layer.py --redis                          # headrace Redis vs channels_redis

With ``--redis`` it starts a private ``redis-server`` on a free port (or uses ``--redis-url``),
runs headrace's ``RedisChannelLayer`` and channels_redis' ``RedisChannelLayer`` on it in the
same run, and adds a multi-process mode (``--processes``, default 4) where the readers live in
other processes, as they do in production:

- ``multiprocess.fanout[N]``: N members spread over the worker processes, one sender in this
  process; ``send_ms`` is the sender's ``group_send`` call, ``all_received_ms`` the time until
  every member in every process has the message (each worker reports, through a pipe, when
  its last member's ``receive()`` returned: the same moment the one-process ``fanout``
  measures; ``perf_counter`` is one monotonic clock for all processes of a machine), and
  ``send_idle_readers_ms`` the ``group_send`` call while the readers are not reading (the
  sender's own cost, without the readers' CPU time competing on a small machine). Medians
  of 30 rounds (10 for 5000 members). The harness keeps its own work out of the way while a
  fan-out is in flight (each worker checks its receivers' results instead of gathering them,
  and the sender waits on all pipes with one waiter), since on two cores it competes with the
  workers still receiving.
- ``multiprocess.p2p_msgs_per_s``: producer here, consumer in a worker, one normal channel,
  each send awaited before the next (bound by the round trip);
  ``multiprocess.p2p_concurrent_msgs_per_s``: the same with ``--concurrency`` (100) producer
  tasks here and as many receivers there, as on a busy server.
- ``multiprocess.rtt_p50_ms``: ping-pong between process channels of two processes.

What is measured (each in one event loop, the way consumers use a layer):

- ``p2p_msgs_per_s``: one producer and one consumer running concurrently on one normal
  channel; the producer retries after ``ChannelFull`` (so capacity applies back-pressure).
- ``rtt_p50_ms`` / ``rtt_p99_ms``: ping-pong between two process-specific channels.
- ``fanout[N]``: N members (each a waiting receiver on its own ``new_channel()``) in one
  group; ``send_ms`` is the ``group_send`` call itself, ``all_received_ms`` the time until
  every member has the message. Medians over several rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import statistics
import sys
import time
from typing import Any

import django
from django.conf import settings

PEERS = {
    "headrace-memory": ("headrace.layers.InMemoryChannelLayer", {}),
    "channels-memory": ("channels.layers.InMemoryChannelLayer", {}),
}


def load_layer_class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


async def make_layer(path: str, config: dict[str, Any]) -> Any:
    return load_layer_class(path)(**config)


async def close_layer(layer: Any) -> None:
    flush = getattr(layer, "flush", None)
    if flush is not None:
        await flush()
    close = getattr(layer, "close", None)
    if close is not None:
        await close()


async def point_to_point(layer: Any, count: int) -> float:
    """Messages per second through one normal channel, producer and consumer concurrent."""
    channel = "bench.p2p"
    full = layer.ChannelFull if hasattr(layer, "ChannelFull") else Exception

    async def produce() -> None:
        message = {"type": "bench.message", "text": "hello"}
        for number in range(count):
            while True:
                try:
                    await layer.send(channel, {**message, "n": number})
                    break
                except full:
                    await asyncio.sleep(0)

    async def consume() -> None:
        for _ in range(count):
            await layer.receive(channel)

    started = time.perf_counter()
    await asyncio.gather(produce(), consume())
    return count / (time.perf_counter() - started)


async def round_trip(layer: Any, rounds: int) -> tuple[float, float]:
    """p50 and p99 milliseconds of a ping-pong between two process channels."""
    ping = await layer.new_channel()
    pong = await layer.new_channel()

    async def echo() -> None:
        for _ in range(rounds):
            await layer.receive(ping)
            await layer.send(pong, {"type": "pong"})

    echoer = asyncio.create_task(echo())
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await layer.send(ping, {"type": "ping"})
        await layer.receive(pong)
        samples.append((time.perf_counter() - started) * 1000)
    await echoer
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def receive_once_each(
    layer: Any, channels: list[str]
) -> tuple[list[asyncio.Task[None]], asyncio.Future[float]]:
    """One task per channel, each waiting for one message (the members of a group, as
    consumers wait); the future gets the moment (``perf_counter``) the last one received."""
    remaining = len(channels)
    last: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def member(channel: str) -> None:
        nonlocal remaining
        await layer.receive(channel)
        remaining -= 1
        if remaining == 0:
            last.set_result(time.perf_counter())

    return [asyncio.create_task(member(channel)) for channel in channels], last


async def fan_out(layer: Any, members: int, rounds: int) -> dict[str, float]:
    """Median ms of the group_send call and until every member received, over ``rounds``."""
    group = f"bench-fanout-{members}"
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add(group, channel)
    send_times: list[float] = []
    receive_times: list[float] = []
    for number in range(rounds):
        tasks, done = receive_once_each(layer, channels)
        await asyncio.sleep(0)  # every member is now waiting in receive()
        gc.collect()
        started = time.perf_counter()
        await layer.group_send(group, {"type": "bench.broadcast", "text": "hi", "n": number})
        send_times.append((time.perf_counter() - started) * 1000)
        finished = await asyncio.wait_for(done, 60)
        receive_times.append((finished - started) * 1000)
        await asyncio.gather(*tasks)
    for channel in channels:
        await layer.group_discard(group, channel)
    return {
        "send_ms": round(statistics.median(send_times), 3),
        "all_received_ms": round(statistics.median(receive_times), 3),
    }


async def run_one(path: str, config: dict[str, Any], quick: bool) -> dict[str, Any]:
    count = 5_000 if quick else 50_000
    rtt_rounds = 200 if quick else 2_000
    sizes = (100, 1000) if quick else (100, 1000, 5000)
    layer = await make_layer(path, config)
    try:
        await point_to_point(layer, min(count, 2_000))  # warm up
        throughput = statistics.median([await point_to_point(layer, count) for _ in range(3)])
        p50, p99 = await round_trip(layer, rtt_rounds)
        fan = {}
        for size in sizes:
            rounds = 3 if quick else (5 if size >= 5000 else 10)
            fan[str(size)] = await fan_out(layer, size, rounds)
    finally:
        await close_layer(layer)
    return {
        "layer": path,
        "config": config,
        "p2p_msgs_per_s": round(throughput),
        "rtt_p50_ms": round(p50, 4),
        "rtt_p99_ms": round(p99, 4),
        "fanout": fan,
    }


def ratios(results: dict[str, dict[str, Any]], ours: str, theirs: str) -> dict[str, Any]:
    """How many times better ``ours`` is than ``theirs`` (higher is better for us)."""
    a, b = results[ours], results[theirs]
    out: dict[str, Any] = {
        "p2p_throughput_x": round(a["p2p_msgs_per_s"] / b["p2p_msgs_per_s"], 2),
        "rtt_p50_x": round(b["rtt_p50_ms"] / a["rtt_p50_ms"], 2),
    }
    for size, figures in a["fanout"].items():
        if size in b["fanout"]:
            theirs_ms = b["fanout"][size]["all_received_ms"]
            out[f"fanout_{size}_all_received_x"] = round(theirs_ms / figures["all_received_ms"], 2)
    return out


# -- Redis: a private server, and the multi-process mode ------------------------------------

REDIS_PEERS = {
    "headrace-redis": ("headrace.layers.redis.RedisChannelLayer", {"prefix": "bench-hr"}),
    "channels-redis": ("channels_redis.core.RedisChannelLayer", {"prefix": "bench-cr"}),
}


class PrivateRedis:
    """A redis-server on a free port in a temporary directory (never a shared one)."""

    def __init__(self) -> None:
        import shutil
        import socket
        import subprocess
        import tempfile

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.directory = tempfile.mkdtemp(prefix="headrace-bench-redis-")
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        import shutil

        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _setup_django() -> None:
    if not settings.configured:
        settings.configure(CHANNEL_LAYERS={}, INSTALLED_APPS=[], USE_TZ=True)
        django.setup()


async def pipe_recv_all(connections: list[Any]) -> list[Any]:
    """The next object from each pipe, in order: one waiter for all of them, so the process
    wakes once per reply and runs no task per pipe (it shares two cores with the workers)."""
    loop = asyncio.get_running_loop()
    results: dict[int, Any] = {}
    all_in = loop.create_future()

    def take(index: int) -> None:
        connection = connections[index]
        if index not in results and connection.poll():
            results[index] = connection.recv()
            loop.remove_reader(connection.fileno())
            if len(results) == len(connections) and not all_in.done():
                all_in.set_result(None)

    for index, connection in enumerate(connections):
        loop.add_reader(connection.fileno(), take, index)
    try:
        for index in range(len(connections)):
            take(index)  # already there
        await all_in
    finally:
        for index, connection in enumerate(connections):
            if index not in results:
                loop.remove_reader(connection.fileno())
    return [results[index] for index in range(len(connections))]


async def pipe_recv(connection: Any) -> Any:
    """The next object from a multiprocessing pipe, awaited in the event loop.

    No executor thread: a thread waking on every reply would compete for the CPU with the
    processes being measured.
    """
    (received,) = await pipe_recv_all([connection])
    return received


async def consume_concurrently(layer: Any, channel: str, count: int, concurrency: int) -> None:
    """Receive ``count`` messages from ``channel`` with ``concurrency`` receivers at once."""
    left = count

    async def reader() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await layer.receive(channel)

    await asyncio.gather(*(reader() for _ in range(concurrency)))


async def produce_concurrently(layer: Any, channel: str, count: int, concurrency: int) -> None:
    """Send ``count`` messages to ``channel`` from ``concurrency`` tasks at once, each retrying
    after ``ChannelFull`` (capacity applies back-pressure)."""
    full = getattr(layer, "ChannelFull", Exception)
    numbers = iter(range(count))

    async def producer() -> None:
        for number in numbers:
            while True:
                try:
                    await layer.send(channel, {"type": "bench.message", "n": number})
                    break
                except full:
                    await asyncio.sleep(0.0005)

    await asyncio.gather(*(producer() for _ in range(concurrency)))


def _worker(path: str, config: dict[str, Any], connection: Any) -> None:
    """A reader process: answers the commands of :func:`run_multiprocess` on ``connection``."""
    _setup_django()

    async def serve() -> None:
        layer = await make_layer(path, config)
        channels: list[str] = []
        while True:
            command, argument = await pipe_recv(connection)
            if command == "stop":
                break
            if command == "join":  # argument: (group name, members in this process)
                group, members = argument
                channels = [await layer.new_channel() for _ in range(members)]
                for channel in channels:
                    await layer.group_add(group, channel)
                connection.send("ready")
            elif command == "arm":  # every member waits for one group message
                waiting, last = receive_once_each(layer, channels)
                await asyncio.sleep(0.02)
                connection.send("armed")
                received_at = await last
                # Every member's task ended with the step that received (the last one set
                # ``last``): read their results rather than gather them, which would schedule
                # a callback per member while the other workers are still receiving.
                for task in waiting:
                    task.result()
                connection.send(received_at)
            elif command == "leave":
                for channel in channels:
                    await layer.group_discard(argument, channel)
                connection.send("left")
            elif command == "consume":  # argument: (messages on bench.mp.p2p, receivers)
                connection.send("consuming")
                await consume_concurrently(layer, "bench.mp.p2p", *argument)
                connection.send("done")
            elif command == "echo":  # argument: rounds; ping here, pong named in each ping
                ping = await layer.new_channel()
                connection.send(ping)
                for _ in range(argument):
                    message = await layer.receive(ping)
                    await layer.send(message["reply"], {"type": "pong"})
                connection.send("done")
        await close_layer(layer)

    asyncio.run(serve())


async def run_multiprocess(
    path: str, config: dict[str, Any], processes: int, quick: bool, p2p_concurrency: int = 100
) -> dict[str, Any]:
    """Fan-out, point-to-point and round trip with the readers in other processes."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    sizes = (100, 1000) if quick else (100, 1000, 5000)
    pipes = []
    workers = []
    for _ in range(processes):
        mine, theirs = context.Pipe()
        worker = context.Process(target=_worker, args=(path, config, theirs), daemon=True)
        worker.start()
        pipes.append(mine)
        workers.append(worker)

    async def ask(connection: Any, command: str, argument: Any = None) -> Any:
        connection.send((command, argument))
        return await pipe_recv(connection)

    layer = await make_layer(path, config)
    result: dict[str, Any] = {"processes": processes, "fanout": {}}
    try:
        rounds = 200 if quick else 2_000
        ping = await ask(pipes[0], "echo", rounds)
        pong = await layer.new_channel()
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            await layer.send(ping, {"type": "ping", "reply": pong})
            await layer.receive(pong)
            samples.append((time.perf_counter() - started) * 1000)
        await pipe_recv(pipes[0])
        samples.sort()
        result["rtt_p50_ms"] = round(statistics.median(samples), 4)
        result["rtt_p99_ms"] = round(samples[int(len(samples) * 0.99) - 1], 4)

        # Point-to-point on one normal channel: one producer and one receiver (each send
        # awaited before the next: bound by the round trip), then `concurrency` of each (a
        # busy server: many consumers sending and receiving at once).
        for key, concurrency, count in (
            ("p2p_msgs_per_s", 1, 2_000 if quick else 10_000),
            ("p2p_concurrent_msgs_per_s", p2p_concurrency, 2_000 if quick else 20_000),
        ):
            await ask(pipes[0], "consume", (count, concurrency))
            started = time.perf_counter()
            await produce_concurrently(layer, "bench.mp.p2p", count, concurrency)
            await pipe_recv(pipes[0])
            result[key] = round(count / (time.perf_counter() - started))
        result["p2p_concurrency"] = p2p_concurrency

        for size in sizes:
            group = f"bench-mp-{size}"
            per_worker = size // processes
            await asyncio.gather(
                *(ask(connection, "join", (group, per_worker)) for connection in pipes)
            )
            send_times: list[float] = []
            receive_times: list[float] = []
            rounds = 3 if quick else (10 if size >= 5000 else 30)
            for number in range(rounds):
                await asyncio.gather(*(ask(connection, "arm") for connection in pipes))
                gc.collect()
                started = time.perf_counter()
                await layer.group_send(group, {"type": "bench.broadcast", "n": number})
                send_times.append((time.perf_counter() - started) * 1000)
                # Each worker answers with the moment its last member's receive() returned
                # (perf_counter is the machine's monotonic clock, shared by its processes).
                last_received = await pipe_recv_all(pipes)
                receive_times.append((max(last_received) - started) * 1000)
            # The sender's own cost with the readers idle (their CPU time not competing).
            idle_times: list[float] = []
            for number in range(rounds):
                gc.collect()
                started = time.perf_counter()
                await layer.group_send(group, {"type": "bench.unread", "n": number})
                idle_times.append((time.perf_counter() - started) * 1000)
            await asyncio.gather(*(ask(connection, "leave", group) for connection in pipes))
            result["fanout"][str(per_worker * processes)] = {
                "send_ms": round(statistics.median(send_times), 3),
                "send_idle_readers_ms": round(statistics.median(idle_times), 3),
                "all_received_ms": round(statistics.median(receive_times), 3),
            }
    finally:
        for connection in pipes:
            connection.send(("stop", None))
        for worker in workers:
            worker.join(30)
        await close_layer(layer)
    return result


def redis_ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """headrace-redis against channels-redis, in the same run (higher is better for us)."""
    out = ratios(results, "headrace-redis", "channels-redis")
    ours = results["headrace-redis"]["multiprocess"]
    theirs = results["channels-redis"]["multiprocess"]
    out["multiprocess_p2p_throughput_x"] = round(
        ours["p2p_msgs_per_s"] / theirs["p2p_msgs_per_s"], 2
    )
    out["multiprocess_p2p_concurrent_throughput_x"] = round(
        ours["p2p_concurrent_msgs_per_s"] / theirs["p2p_concurrent_msgs_per_s"], 2
    )
    # Each layer at its best, whichever way of sending suits it.
    out["multiprocess_p2p_best_vs_best_x"] = round(
        max(ours["p2p_msgs_per_s"], ours["p2p_concurrent_msgs_per_s"])
        / max(theirs["p2p_msgs_per_s"], theirs["p2p_concurrent_msgs_per_s"]),
        2,
    )
    out["multiprocess_rtt_p50_x"] = round(theirs["rtt_p50_ms"] / ours["rtt_p50_ms"], 2)
    for size, figures in ours["fanout"].items():
        if size in theirs["fanout"]:
            out[f"multiprocess_fanout_{size}_all_received_x"] = round(
                theirs["fanout"][size]["all_received_ms"] / figures["all_received_ms"], 2
            )
    for name, figures in (("headrace", ours), ("channels_redis", theirs)):
        out[f"{name}_group_send_idle_readers_ms"] = {
            size: value["send_idle_readers_ms"] for size, value in figures["fanout"].items()
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", help="dotted path of a layer class (default: the comparison)")
    parser.add_argument("--config", default="{}", help="JSON CONFIG for --layer")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    parser.add_argument(
        "--redis", action="store_true", help="headrace's Redis layer vs channels_redis"
    )
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private one")
    parser.add_argument("--processes", type=int, default=4, help="reader processes (--redis)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=100,
        help="producers and receivers of the concurrent point-to-point measure (--redis)",
    )
    args = parser.parse_args()

    _setup_django()
    if args.redis:
        main_redis(args)
        return

    if args.layer:
        runs = {args.layer: (args.layer, json.loads(args.config))}
    else:
        runs = {}
        for name, (path, config) in PEERS.items():
            try:
                load_layer_class(path)
            except ImportError:
                print(
                    f"# {name}: not installed, skipped (pip install -e '.[bench]')", file=sys.stderr
                )
                continue
            runs[name] = (path, config)

    results = {}
    for name, (path, config) in runs.items():
        print(f"# running {name}", file=sys.stderr)
        results[name] = asyncio.run(run_one(path, config, args.quick))

    report: dict[str, Any] = {
        "benchmark": "layer",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "results": results,
    }
    if "headrace-memory" in results and "channels-memory" in results:
        report["headrace_vs_channels_memory"] = ratios(
            results, "headrace-memory", "channels-memory"
        )
    print(json.dumps(report, indent=2))


def main_redis(args: argparse.Namespace) -> None:
    server = None if args.redis_url else PrivateRedis()
    url = args.redis_url or (server.url if server else "")
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, (path, config) in REDIS_PEERS.items():
            try:
                load_layer_class(path)
            except ImportError:
                print(
                    f"# {name}: not installed, skipped (pip install -e '.[bench]')", file=sys.stderr
                )
                continue
            config = {**config, "hosts": [url]}
            print(f"# running {name}", file=sys.stderr)
            results[name] = asyncio.run(run_one(path, config, args.quick))
            print(f"# running {name} over {args.processes} processes", file=sys.stderr)
            results[name]["multiprocess"] = asyncio.run(
                run_multiprocess(path, config, args.processes, args.quick, args.concurrency)
            )
    finally:
        if server is not None:
            server.close()
    report: dict[str, Any] = {
        "benchmark": "layer-redis",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "results": results,
    }
    if len(results) == 2:
        report["headrace_redis_vs_channels_redis"] = redis_ratios(results)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
