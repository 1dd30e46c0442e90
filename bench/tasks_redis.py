"""Task benchmark on Redis: headrace's Redis backend beside Celery, Dramatiq and Huey, on one
private ``redis-server`` (no persistence) started for the run, in the same run.

Figures (each worker is a separate process, as in production):

- ``drain``: the worker process(es) start on an empty queue and are held stopped (SIGSTOP)
  once up while ``--jobs`` no-op tasks are enqueued, then go on together (so that no
  process's start-up falls in the measure, even with three); tasks completed per second from
  the first completion to the last, and the CPU the worker process(es) and redis-server
  spent per job in that time (``/proc``; steadier than rates on a shared machine). Every
  system's task does the same one ``INCR`` so completions can be counted. One worker
  process each: headrace with an async task (on the worker's loop) and a sync one (on
  its thread pool), Celery (``--pool threads --concurrency 8``, ``task_acks_late``),
  Dramatiq (1 process, 8 threads; its Redis broker acknowledges after the run) and Huey (8
  threads). Then headrace with 3 worker processes.
- ``delayed_rss``: one idle headrace worker; 100,000 jobs enqueued an hour ahead
  (``countdown=3600``); the worker's RSS before and after (delayed jobs stay in Redis).
- ``countdown_lateness``: ``countdown=2`` jobs enqueued at ``--rate`` a second for
  ``--seconds``; how late after its due time each started (ms; p50, p99, max).

    python bench/tasks.py --backend redis            # or: python bench/tasks_redis.py
    python bench/tasks_redis.py --quick              # a smoke test
    python bench/tasks_redis.py --only headrace      # skip the peers

Needs the ``bench`` extra (``pip install -e '.[bench]'``). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: The issue's goals.
GOAL_VS_DRAMATIQ = 2.0
GOAL_SCALING = 1.6
GOAL_RSS_MB = 20
GOAL_LATE_P99_MS = 10


class PrivateRedis:
    """A redis-server on a free port in a temporary directory (never a shared one)."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.directory = tempfile.mkdtemp(prefix="headrace-bench-tasks-")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "HEADRACE_BENCH_REDIS": url,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}",
        "DJANGO_SETTINGS_MODULE": "bench._tasks_redis_settings",
    }


def _worker_command(system: str) -> list[str]:
    python = sys.executable
    return {
        "headrace": [python, "-m", "django", "runworker", "--tasks", "default",
                     "--concurrency", "100"],
        "celery": [str(BIN / "celery"), "-A", "bench._task_peers", "worker", "--pool",
                   "threads", "--concurrency", "8", "-Q", "bench", "--without-gossip",
                   "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
        "dramatiq": [str(BIN / "dramatiq"), "bench._task_peers", "--processes", "1",
                     "--threads", "8", "--queues", "bench"],
        "huey": [str(BIN / "huey_consumer"), "bench._task_peers.huey", "-w", "8", "-k",
                 "thread", "-q"],
    }[system]  # fmt: skip


def _start(system: str, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _worker_command(system),
        env=_env(url),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Celery and Dramatiq fork: stop the whole group
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(session: int | None = None, pid: int | None = None) -> float:
    """User + system CPU seconds of one process, or of every process in a session (the
    peers fork their workers; each worker is started in a session of its own)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat") if pid is None else [Path(f"/proc/{pid}/stat")]:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended in between
        if pid is not None or int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _wait(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _enqueuers() -> dict[str, Callable[[], None]]:
    from bench import _task_peers as peers
    from bench import _tasks_redis_app as app

    return {
        "headrace": app.noop_async.enqueue,
        "headrace-sync": app.noop_sync.enqueue,
        "celery": peers.celery_noop.delay,
        "dramatiq": peers.dramatiq_noop.send,
        "huey": peers.huey_noop,
    }


def drain(server: PrivateRedis, name: str, jobs: int, processes: int = 1) -> dict[str, Any]:
    """Start the workers, hold them while ``jobs`` go in, then let them run: completions
    (and CPU) per second from the first completion to the last."""
    client = server.client
    client.flushdb()
    enqueue = _enqueuers()[name]
    system = "headrace" if name.startswith("headrace") else name
    # Start-up is left out for every system and every process: the workers start on an
    # empty queue; once up (headrace: each has written its worker record; a peer: it ran one
    # warm-up job) they are stopped (SIGSTOP), the jobs go in, and they go on (SIGCONT)
    # together.
    workers = [_start(system, server.url) for _ in range(processes)]
    try:
        if system == "headrace":
            records = "bench-tasks:{default}:workers"
            _wait(lambda: client.hlen(records) >= processes, f"{name} workers to start", 60)
        else:
            enqueue()
            _wait(lambda: int(client.get("bench:done") or 0) >= 1, f"{name} to start", 60)
        time.sleep(0.5)  # past start-up, into their wait for work
        for worker in workers:
            os.killpg(worker.pid, signal.SIGSTOP)
        client.delete("bench:done")
        started = time.perf_counter()
        for _ in range(jobs):
            enqueue()
        enqueue_rate = jobs / (time.perf_counter() - started)
        for worker in workers:
            os.killpg(worker.pid, signal.SIGCONT)

        def done() -> int:
            return int(client.get("bench:done") or 0)

        def cpu() -> tuple[float, float]:
            workers_cpu = sum(_cpu_seconds(session=worker.pid) for worker in workers)
            return workers_cpu, _cpu_seconds(pid=server.process.pid)

        _wait(lambda: done() >= 1, f"{name} to start", 60)
        first, at, cpu_at = done(), time.perf_counter(), cpu()
        _wait(lambda: done() >= jobs, f"{name} to finish {jobs} jobs", 600)
        elapsed = time.perf_counter() - at
        cpu_end = cpu()
    finally:
        for worker in workers:
            _stop(worker)
    counted = jobs - first
    worker_cpu, redis_cpu = (end - start for end, start in zip(cpu_end, cpu_at, strict=True))
    return {
        "per_s": round(counted / elapsed),
        "enqueue_per_s": round(enqueue_rate),
        "processes": processes,
        # CPU per job (microseconds), less swayed by other load than the rate: the worker
        # process(es), and the redis-server (which also serves the INCR every task does).
        "worker_us_per_job": round(worker_cpu / counted * 1e6),
        "redis_us_per_job": round(redis_cpu / counted * 1e6),
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def delayed_rss(server: PrivateRedis, jobs: int) -> dict[str, Any]:
    """RSS of an idle headrace worker before and after ``jobs`` jobs due in an hour."""
    from bench import _tasks_redis_app as app

    server.client.flushdb()
    worker = _start("headrace", server.url)
    try:
        app.noop_async.enqueue()  # it is up once it ran this one
        _wait(lambda: int(server.client.get("bench:done") or 0) == 1, "the worker", 60)
        time.sleep(0.5)
        before = _rss_mb(worker.pid)
        later = app.noop_async.using(countdown=3600)
        started = time.perf_counter()
        for _ in range(jobs):
            later.enqueue()
        enqueue_seconds = time.perf_counter() - started
        wake = "bench-tasks:{default}:wake"
        _wait(lambda: server.client.llen(wake) == 0, "the worker to go idle", 60)
        time.sleep(1.0)  # let it settle into its blocking wait
        after = _rss_mb(worker.pid)
        delayed = server.client.zcard("bench-tasks:{default}:delayed")
    finally:
        _stop(worker)
    return {
        "jobs": jobs,
        "in_redis_delayed": delayed,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_growth_mb": round(after - before, 1),
        "enqueue_per_s": round(jobs / enqueue_seconds),
    }


def countdown_lateness(server: PrivateRedis, rate: int, seconds: float) -> dict[str, Any]:
    """``countdown=2`` jobs at ``rate`` a second: how late each starts after its due time."""
    from bench import _tasks_redis_app as app

    server.client.flushdb()
    worker = _start("headrace", server.url)
    total = int(rate * seconds)
    try:
        app.noop_async.enqueue()
        _wait(lambda: int(server.client.get("bench:done") or 0) == 1, "the worker", 60)
        delayed = app.stamp.using(countdown=2)
        started = time.perf_counter()
        for n in range(total):
            target = started + n / rate
            pause = target - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            delayed.enqueue(time.time() + 2)
        achieved = total / (time.perf_counter() - started)
        _wait(lambda: server.client.llen("bench:late") >= total, "every delayed job", 120)
    finally:
        _stop(worker)
    late = sorted(float(v) for v in server.client.lrange("bench:late", 0, -1))

    def at(q: float) -> float:
        return round(late[min(len(late) - 1, int(q * len(late)))], 2)

    return {
        "jobs": total,
        "enqueued_per_s": round(achieved),
        "late_ms": {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(late[-1], 2)},
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    server = PrivateRedis()
    os.environ.update({"HEADRACE_BENCH_REDIS": server.url})
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench._tasks_redis_settings"
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    import django

    django.setup()
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "rounds": args.rounds,
    }
    try:
        systems = ["headrace", "headrace-sync"]
        if args.only != "headrace":
            systems += ["dramatiq", "celery", "huey"]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
        runs["headrace-3-processes"] = []
        for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits all
            for name in systems:
                runs[name].append(drain(server, name, args.jobs))
            runs["headrace-3-processes"].append(drain(server, "headrace", args.jobs, 3))
        out["drain_per_s"] = {
            name: round(statistics.median(r["per_s"] for r in found))
            for name, found in runs.items()
        }
        out["drain_runs"] = {name: [r["per_s"] for r in found] for name, found in runs.items()}
        for figure in ("worker_us_per_job", "redis_us_per_job"):
            out[figure] = {
                name: round(statistics.median(r[figure] for r in found))
                for name, found in runs.items()
            }
        out["enqueue_per_s"] = {
            name: round(statistics.median(r["enqueue_per_s"] for r in found))
            for name, found in runs.items()
        }
        out["delayed_rss"] = delayed_rss(server, args.delayed)
        out["countdown_lateness"] = countdown_lateness(server, args.rate, args.seconds)
        rates = out["drain_per_s"]
        goals: dict[str, Any] = {}
        if "dramatiq" in rates:
            ratio = rates["headrace"] / rates["dramatiq"]
            goals["vs_dramatiq"] = {"ratio": round(ratio, 2), "goal": GOAL_VS_DRAMATIQ}
            goals["vs_dramatiq"]["met"] = ratio >= GOAL_VS_DRAMATIQ
        scaling = rates["headrace-3-processes"] / rates["headrace"]
        goals["three_processes"] = {
            "ratio": round(scaling, 2),
            "goal": GOAL_SCALING,
            "met": scaling >= GOAL_SCALING,
        }
        growth = out["delayed_rss"]["rss_growth_mb"]
        goals["delayed_rss_mb"] = {
            "growth": growth,
            "goal": GOAL_RSS_MB,
            "met": growth < GOAL_RSS_MB,
        }
        p99 = out["countdown_lateness"]["late_ms"]["p99"]
        goals["countdown_p99_ms"] = {
            "p99": p99,
            "goal": GOAL_LATE_P99_MS,
            "met": p99 <= GOAL_LATE_P99_MS,
        }
        out["goals"] = goals
    finally:
        server.close()
    return out


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    found.add_argument("--jobs", type=int, default=10_000)
    found.add_argument("--rounds", type=int, default=3)
    found.add_argument("--delayed", type=int, default=100_000)
    found.add_argument("--rate", type=int, default=1_000)
    found.add_argument("--seconds", type=float, default=5.0)
    found.add_argument("--only", choices=["headrace"], help="skip the peers")
    found.add_argument("--quick", action="store_true", help="a smoke test: small numbers")
    return found


def run(argv: list[str] | None = None) -> None:
    arguments = parser().parse_args(argv)
    if arguments.quick:
        arguments.jobs, arguments.rounds, arguments.delayed = 1_000, 1, 2_000
        arguments.rate, arguments.seconds = 200, 1.0
    print(json.dumps(main(arguments), indent=2))


if __name__ == "__main__":
    run()
