"""Delay server benchmark: how late do delayed messages arrive?

Schedules ``--rate`` messages a second for ``--seconds`` seconds, each with a random delay
between 10 ms and 2 s, and measures how late each arrives (arrival time minus due time). Prints
p50 / p99 / max lateness as JSON, for:

- ``asyncio``: the floor — plain ``loop.call_later`` timers in one process, no layer at all;
- ``memory``: headrace's in-memory layer, ``send(channel, message, delay=...)`` with one
  receiver reading the channel;
- ``memory-asgi.delay``: the same through the old ``asgi.delay`` format, forwarded by a worker;
- ``redis``: headrace's Redis layer, against a redis-server this script starts on a free
  127.0.0.1 port (and stops afterwards).

    python bench/delay.py                          # all of the above, 1000/s for 10 s each
    python bench/delay.py --only asyncio,memory    # a subset
    python bench/delay.py --rate 200 --seconds 2   # a smoke test

Messages are sent and received in one process, so arrival and due times come from one clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

CHANNEL = "bench-delay"
REDIS_URL = ""  # set by main() when a redis bench runs


def summary(lateness: list[float], expected: int) -> dict[str, Any]:
    ordered = sorted(lateness)
    ms = [value * 1000 for value in ordered]
    if not ms:
        return {"messages": expected, "arrived": 0}
    return {
        "messages": expected,
        "arrived": len(ms),
        "early": sum(1 for value in ms if value < -0.001),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
        "max_ms": round(ms[-1], 3),
    }


async def pace(
    rate: int, seconds: float, rng: random.Random, schedule: Callable[[float], Awaitable[None]]
) -> int:
    """Call ``schedule(delay)`` ``rate`` times a second for ``seconds``; returns the count."""
    total = int(rate * seconds)
    start = time.monotonic()
    for index in range(total):
        target = start + index / rate
        wait = target - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await schedule(rng.uniform(0.010, 2.0))
    return total


async def bench_asyncio(rate: int, seconds: float, rng: random.Random) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    done = asyncio.Event()
    expected = int(rate * seconds)

    def arrive(due: float) -> None:
        lateness.append(time.time() - due)
        if len(lateness) == expected:
            done.set()

    async def schedule(delay: float) -> None:
        loop.call_later(delay, arrive, time.time() + delay)

    await pace(rate, seconds, rng, schedule)
    await asyncio.wait_for(done.wait(), timeout=10)
    return summary(lateness, expected)


async def bench_layer(
    layer: Any, rate: int, seconds: float, rng: random.Random, *, old_format: bool = False
) -> dict[str, Any]:
    """Send delayed messages to CHANNEL and read them back, measuring lateness."""
    lateness: list[float] = []
    expected = int(rate * seconds)

    async def read() -> None:
        while len(lateness) < expected:
            message = await layer.receive(CHANNEL)
            lateness.append(time.time() - message["due"])

    async def schedule(delay: float) -> None:
        due = time.time() + delay
        if old_format:
            request = {"channel": CHANNEL, "content": {"due": due}, "delay": delay * 1000}
            await layer.send("asgi.delay", request)
        else:
            await layer.send(CHANNEL, {"due": due}, delay=delay)

    reader = asyncio.create_task(read())
    await pace(rate, seconds, rng, schedule)
    try:
        await asyncio.wait_for(reader, timeout=15)
    except TimeoutError:
        pass
    return summary(lateness, expected)


async def bench_memory(rate: int, seconds: float, rng: random.Random) -> dict[str, Any]:
    from headrace.layers import InMemoryChannelLayer

    layer = InMemoryChannelLayer(capacity=100_000)
    try:
        return await bench_layer(layer, rate, seconds, rng)
    finally:
        await layer.flush()
        await layer.close()


async def bench_memory_asgi_delay(rate: int, seconds: float, rng: random.Random) -> dict[str, Any]:
    from headrace.layers import InMemoryChannelLayer
    from headrace.worker import Worker

    layer = InMemoryChannelLayer(capacity=100_000)
    worker = Worker(None, ["asgi.delay"], layer=layer)
    task = asyncio.create_task(worker.run())
    try:
        return await bench_layer(layer, rate, seconds, rng, old_format=True)
    finally:
        worker.stop()
        await task
        await layer.flush()
        await layer.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server on a free 127.0.0.1 port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench needs redis-server on PATH for the redis layer")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", directory]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


async def bench_redis(rate: int, seconds: float, rng: random.Random) -> dict[str, Any]:
    from headrace.layers.redis import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix="bench-delay", capacity=100_000)
    try:
        return await bench_layer(layer, rate, seconds, rng)
    finally:
        await layer.flush()
        await layer.close()


BENCHES: dict[str, Callable[[int, float, random.Random], Awaitable[dict[str, Any]]]] = {
    "asyncio": bench_asyncio,
    "memory": bench_memory,
    "memory-asgi.delay": bench_memory_asgi_delay,
    "redis": bench_redis,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="messages scheduled per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to schedule")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    names = [name for name in args.only.split(",") if name]
    unknown = [name for name in names if name not in BENCHES]
    if unknown:
        parser.error(f"unknown benches {unknown}; choose from {list(BENCHES)}")
    if not settings.configured:
        settings.configure(INSTALLED_APPS=["headrace"], USE_TZ=True, CHANNEL_LAYERS={})
        django.setup()
    # What runserver, runworker and rundelay do once started; the same for every variant.
    from headrace.layers.redis import RedisChannelLayer  # noqa: F401 - loaded before freezing
    from headrace.process import freeze_startup_objects

    freeze_startup_objects()
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if any(name.startswith("redis") for name in names):
            global REDIS_URL
            REDIS_URL = stack.enter_context(redis_server())
        for name in names:
            rng = random.Random(args.seed)
            results[name] = asyncio.run(BENCHES[name](args.rate, args.seconds, rng))
            print(f"# {name}: {results[name]}", file=sys.stderr)
    report: dict[str, Any] = {
        "bench": "delay",
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "delays": "uniform 10 ms .. 2 s",
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "results": results,
    }
    floor = results.get("asyncio")
    if floor:
        report["p99_over_asyncio"] = {
            name: round(result["p99_ms"] / max(floor["p99_ms"], 0.001), 2)
            for name, result in results.items()
            if name != "asyncio"
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
