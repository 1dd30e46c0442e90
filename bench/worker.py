"""Worker benchmark: no-op consumer throughput with 1 and 3 worker processes over Redis.

Beside headrace's ``runworker`` on its Redis layer, it runs Channels' ``runworker`` on
channels_redis in the same run, against the same private redis-server (started by this script
on a free 127.0.0.1 port and stopped afterwards).

For each stack and process count: fill the ``noop`` channel with ``--messages`` messages, start
the worker processes, and watch how many they have handled (each consumer overwrites a
per-process counter file). Throughput is measured between 10 % and 90 % of the messages, so
process start-up and the tail do not count; then it checks every message was handled, and
reports how many handler calls there were beyond the number of messages (``handled_twice``:
deliveries of one message to two processes).

    python bench/worker.py                       # 20,000 messages; 1 and 3 processes; both stacks
    python bench/worker.py --messages 3000       # a smoke test
    python bench/worker.py --stacks headrace --processes 3

Prints JSON (messages per second, and headrace / Channels ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.delay import redis_server  # noqa: E402

from headrace.process import EVENT_LOOPS  # noqa: E402

READY = {"headrace": "worker reading", "channels": "Running worker for channels"}


async def fill(stack: str, url: str, count: int) -> None:
    """Put ``count`` messages on ``noop`` with the stack's own layer."""
    if stack == "headrace":
        from headrace.layers.redis import RedisChannelLayer

        layer: Any = RedisChannelLayer(hosts=[url], prefix="bench", capacity=1_000_000, expiry=600)
    else:
        from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer

        layer = ChannelsRedisLayer(hosts=[url], capacity=1_000_000, expiry=600)
    chunk = 500 if stack == "headrace" else 50  # channels_redis: its connection pool's limit
    for start in range(0, count, chunk):
        await asyncio.gather(
            *(
                layer.send("noop", {"type": "job.run", "n": n})
                for n in range(start, min(count, start + chunk))
            )
        )
    if stack == "headrace":
        await layer.close()
    else:
        await layer.close_pools()  # drops the connections, keeps the messages


def handled(directory: Path) -> int:
    total = 0
    for path in directory.glob("*.count"):
        data = path.read_bytes()
        if len(data) >= 8:
            total += int.from_bytes(data[:8], "little")
    return total


def wait_ready(process: subprocess.Popen[str], text: str, timeout: float = 60) -> None:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        if text in line:
            return
    raise RuntimeError(f"worker {process.args} did not start")


def run_one(
    stack: str, url: str, processes: int, count: int, concurrency: int, loop: str = "auto"
) -> dict[str, Any]:
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushall()
    asyncio.run(fill(stack, url, count))
    with tempfile.TemporaryDirectory() as directory:
        env = {
            **os.environ,
            "BENCH_STACK": stack,
            "BENCH_REDIS_URL": url,
            "BENCH_COUNT_DIR": directory,
            "DJANGO_SETTINGS_MODULE": "bench._worker_settings",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        }
        command = [sys.executable, "-m", "django", "runworker", "noop"]
        if stack == "headrace":
            command += ["--concurrency", str(concurrency), "--no-delay", "--loop", loop]
        workers = [
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        try:
            for worker in workers:
                wait_ready(worker, READY[stack])
            low, high = int(count * 0.1), int(count * 0.9)
            t_low = t_high = 0.0
            deadline = time.monotonic() + 300
            done = 0
            while time.monotonic() < deadline:
                done = handled(Path(directory))
                now = time.monotonic()
                if not t_low and done >= low:
                    t_low = now
                if not t_high and done >= high:
                    t_high = now
                if done >= count:
                    break
                for worker in workers:
                    if worker.poll() is not None:
                        _, err = worker.communicate()
                        raise RuntimeError(f"a {stack} worker exited early:\n{err[-3000:]}")
                time.sleep(0.002)
            time.sleep(0.5)  # let late (duplicate) deliveries show
            done = handled(Path(directory))
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    worker.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.communicate()
    if done < count:
        raise RuntimeError(f"{stack} x{processes}: handled only {done} of {count} messages")
    rate = (high - low) / (t_high - t_low)
    return {
        "processes": processes,
        "messages": count,
        "msgs_per_s": round(rate),
        # More handler calls than messages: some were delivered twice.
        "handled_twice": done - count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--processes", default="1,3", help="comma-separated process counts")
    parser.add_argument("--stacks", default="headrace,channels")
    parser.add_argument("--concurrency", type=int, default=100, help="headrace --concurrency")
    parser.add_argument(
        "--loop",
        default="auto",
        choices=EVENT_LOOPS,
        help="headrace runworker --loop (auto: uvloop when installed, its default)",
    )
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench._worker_settings")
    import django

    django.setup()
    stacks = [s for s in args.stacks.split(",") if s]
    counts = [int(p) for p in args.processes.split(",") if p]
    results: dict[str, dict[str, Any]] = {}
    with redis_server() as url:
        for processes in counts:
            for stack in stacks:
                result = run_one(stack, url, processes, args.messages, args.concurrency, args.loop)
                results.setdefault(stack, {})[f"x{processes}"] = result
                print(f"# {stack} x{processes}: {result}", file=sys.stderr)
    report: dict[str, Any] = {
        "bench": "worker",
        "consumer": "no-op AsyncConsumer on one normal channel, over Redis",
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "headrace_loop": args.loop,
        "results": results,
    }
    if "headrace" in results and "channels" in results:
        report["headrace_over_channels"] = {
            key: round(
                results["headrace"][key]["msgs_per_s"] / results["channels"][key]["msgs_per_s"], 2
            )
            for key in results["headrace"]
            if key in results["channels"]
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
