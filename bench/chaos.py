"""Chaos bench: what breaks, and what is lost, when things go wrong — counted, not guessed.

Loopback only, bounded in count and time (a couple of minutes with the defaults). It starts
its own redis-server on a free 127.0.0.1 port in a temporary directory (no persistence, as a
cache-style deployment runs it), a uvicorn process serving the test suite's chat app on the
Redis layer (``bench._chaos_app``: the same project ``make test`` uses), and ``runworker``
processes; then it runs:

* ``origins``: the hostile-origin matrix — handshakes with forged ``Origin`` values (and
  forged ``Host`` values with a good origin) against the real server; counts those accepted;
* ``connects``: N simultaneous WebSocket connects (default 1,000); counts opened and errors;
* ``redis-kills``: a 200-client room on the Redis layer while this process ``group_send``\\ s a
  numbered message every 10 ms; redis-server is SIGKILLed and restarted 5 times. For each
  outage: messages lost while it was down, lost after it came back, and the time until a
  message reached every client again;
* ``runworker``: a worker with 20 jobs in hand is sent SIGTERM, then (separately) SIGKILL;
  counts jobs lost (sent, never finished by it or by the worker started after it).
* ``task-kills``: durable tasks on the Redis task backend; 20,000 tasks that record each run,
  3 ``runworker --tasks`` processes, one SIGKILLed every 5 s for 3 minutes (round robin) and
  replaced at once; counts tasks lost (must be 0), run more than once (each must carry a
  ``WorkerLost`` error), dead-lettered, and the time to drain (see
  :func:`scenario_task_kills`; about 4 minutes with the defaults).

Prints one JSON document. Bounded versions of ``origins``, ``connects`` and ``task-kills`` run
in ``make test`` (tests/test_chaos_bounded.py); docs/explanation/reliability.md shows the
results.

    python bench/chaos.py                            # everything, default sizes
    python bench/chaos.py --scenarios origins,connects --connects 300
    python bench/chaos.py --scenarios redis-kills --clients 50 --kills 2
    python bench/chaos.py --scenarios task-kills --task-jobs 2000 --kill-for 20
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT), str(ROOT / "src")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

__all__ = ["FORGED_HOSTS", "HOSTILE_ORIGINS", "handshake", "hostile_matrix", "open_many"]

#: Forged ``Origin`` values for a server whose allowed hosts are localhost, 127.0.0.1 and
#: testserver (the test project's). Each entry is a list of header values: ``[]`` sends no
#: ``Origin``, two values send two headers.
HOSTILE_ORIGINS: list[list[bytes]] = [
    [b"http://evil.com"],
    [b"https://evil.com"],
    [b"http://evil.com:80"],
    [b"ws://evil.com"],
    [b"wss://evil.com"],
    [b"http://EVIL.com"],
    [b"http://127.0.0.1.evil.com"],
    [b"http://127.0.0.1.nip.io"],
    [b"http://localhost.evil.com"],
    [b"http://testserver.evil.com"],
    [b"http://evillocalhost"],
    [b"http://evil-127.0.0.1"],
    [b"http://127.0.0.1@evil.com"],
    [b"http://localhost@evil.com:80"],
    [b"http://evil.com/127.0.0.1"],
    [b"http://evil.com?127.0.0.1"],
    [b"http://evil.com#127.0.0.1"],
    [b"http://evil.com:80/localhost"],
    [b"http://127.0.0.2"],
    [b"http://127.1"],
    [b"http://0x7f000001"],
    [b"http://2130706433"],
    [b"http://0177.0.0.1"],
    [b"http://[::1]"],
    [b"http://[::ffff:127.0.0.1]"],
    [b"http://0.0.0.0"],
    [b"http://sub.localhost"],
    [b"http://localhost."],
    [b"http://local%68ost"],
    [b"http://localhost%00.evil.com"],
    [b"http://localhost%2eevil.com"],
    [
        b"http://\xef\xbd\x8c\xef\xbd\x8f\xef\xbd\x83\xef\xbd\x81\xef\xbd\x8c\xef\xbd\x88\xef\xbd\x8f\xef\xbd\x93\xef\xbd\x94"
    ],  # fullwidth "localhost"
    [b"http://l\xd0\xbecalhost"],  # Cyrillic o
    [b"http://xn--localhost-"],
    [b"null"],
    [b"NULL"],
    [b""],
    [b" "],
    [b"*"],
    [b"file://"],
    [b"file:///etc/passwd"],
    [b"chrome-extension://abcdefghijklmnop"],
    [b"moz-extension://1234"],
    [b"data:"],
    [b"data:text/html,hi"],
    [b"javascript:alert(1)"],
    [b"about:blank"],
    [b"localhost"],
    [b"127.0.0.1"],
    [b"//127.0.0.1"],
    [b"http:/127.0.0.1"],
    [b"http:127.0.0.1"],
    [b"http//127.0.0.1"],
    [b"http://"],
    [b"http://:80"],
    [b"http://127.0.0.1:notaport"],
    [b"http://127.0.0.1:99999"],
    [b"http://127.0.0.1:-1"],
    [b"http://evil.com\x85http://127.0.0.1"],
    [b"http://evil.com\thttp://127.0.0.1"],
    [b"http://evil.com http://127.0.0.1"],
    [b"http://evil.com,http://127.0.0.1"],
    [b"http://127.0.0.1 http://evil.com"],
    [b"http://127.0.0.1,http://evil.com"],
    [b"x" * 4000],
    [b"http://" + b"a." * 1000 + b"evil.com"],
    [],  # no Origin at all
    [b"GOOD", b"http://evil.com"],  # GOOD is replaced by the server's own origin
    [b"http://evil.com", b"GOOD"],
    [b"GOOD", b"GOOD"],
    [b"GOOD", b""],
]

#: Forged ``Host`` values, each sent with the server's own (allowed) origin.
FORGED_HOSTS: list[list[bytes]] = [
    [b"evil.com"],
    [b"evil.com:80"],
    [b"EVIL.COM"],
    [b"127.0.0.1.evil.com"],
    [b"localhost.evil.com"],
    [b"127.0.0.1@evil.com"],
    [b"evil.com#127.0.0.1"],
    [b"127.0.0.2"],
    [b"[::1]"],
    [b"0.0.0.0"],
    [b"bad host"],
    [b"evil.com, 127.0.0.1"],
    [b"127.0.0.1", b"evil.com"],
]


async def handshake(
    port: int,
    path: str,
    *,
    origins: list[bytes],
    hosts: list[bytes] | None = None,
    timeout: float = 5.0,
) -> int:
    """One raw WebSocket handshake; returns the HTTP status (101 = accepted, 0 = no answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {path} HTTP/1.1".encode()]
        lines += [b"Host: " + host for host in (hosts or [f"127.0.0.1:{port}".encode()])]
        lines += [
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            b"Sec-WebSocket-Version: 13",
        ]
        lines += [b"Origin: " + origin for origin in origins]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError):
        return 0
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = status.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


async def hostile_matrix(port: int, path: str) -> dict[str, Any]:
    """Run every forged origin and host; count what was accepted (and that a good one is)."""
    good = f"http://127.0.0.1:{port}".encode()
    accepted_origins: list[str] = []
    accepted_hosts: list[str] = []
    statuses: collections.Counter[int] = collections.Counter()
    for origins in HOSTILE_ORIGINS:
        real = [good if value == b"GOOD" else value for value in origins]
        status = await handshake(port, path, origins=real)
        statuses[status] += 1
        if status == 101:
            accepted_origins.append(repr(real))
    for hosts in FORGED_HOSTS:
        status = await handshake(port, path, origins=[good], hosts=hosts)
        statuses[status] += 1
        if status == 101:
            accepted_hosts.append(repr(hosts))
    control = await handshake(port, path, origins=[good])
    return {
        "forged_origins": len(HOSTILE_ORIGINS),
        "forged_origins_accepted": len(accepted_origins),
        "forged_hosts": len(FORGED_HOSTS),
        "forged_hosts_accepted": len(accepted_hosts),
        "accepted": accepted_origins + accepted_hosts,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "good_origin_accepted": control == 101,
    }


async def open_many(url: str, origin: str, count: int) -> tuple[list[Any], dict[str, int], float]:
    """Open ``count`` WebSocket connections at once; returns (open ones, errors by kind, secs)."""
    from websockets.asyncio.client import connect

    async def one() -> Any:
        return await connect(url, origin=origin, proxy=None, open_timeout=30)  # type: ignore[arg-type]

    started = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    elapsed = time.monotonic() - started
    opened = [r for r in results if not isinstance(r, BaseException)]
    errors = collections.Counter(type(r).__name__ for r in results if isinstance(r, BaseException))
    return opened, dict(errors), elapsed


async def close_all(connections: list[Any]) -> None:
    await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, process: subprocess.Popen[Any], what: str, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


class Redis:
    """A private redis-server without persistence: a restart comes back empty."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench/chaos.py needs redis-server on PATH")
        self.port = free_port()
        self.command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.command += ["--appendonly", "no", "--dir", str(directory)]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.process, "redis-server")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def project_env(redis: Redis, **extra: str) -> dict[str, str]:
    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="bench._chaos_settings",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        CHAOS_REDIS_URL=redis.url,
        PYTHONUNBUFFERED="1",
        **extra,
    )


@contextlib.contextmanager
def uvicorn_server(redis: Redis, log: Path) -> Iterator[int]:
    """uvicorn serving bench._chaos_app on the Redis layer, as production would run it."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench._chaos_app:application"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"]
    command += ["--log-level", "warning", "--no-access-log", "--backlog", "4096"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=project_env(redis), stdout=output, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(port, process, "uvicorn")
            yield port
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def log_summary(log: Path) -> dict[str, Any]:
    """What the server logged: refusals (expected), and anything that looks like a failure."""
    lines = log.read_text(errors="replace").splitlines()
    refusals = [line for line in lines if line.startswith("refused ")]
    other = [line for line in lines if not line.startswith("refused ") and line.strip()]
    return {
        "lines": len(lines),
        "refusals": len(refusals),
        "tracebacks": sum(1 for line in lines if line.startswith("Traceback")),
        "never_retrieved": sum(1 for line in lines if "exception was never retrieved" in line),
        "other_lines_sample": other[:8],
    }


# -- scenarios --------------------------------------------------------------------------------


async def scenario_connects(port: int, count: int) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}/ws/chat/connects/"
    opened, errors, elapsed = await open_many(url, f"http://127.0.0.1:{port}", count)
    await close_all(opened)
    return {"attempted": count, "opened": len(opened), "errors": errors, "seconds": elapsed}


async def scenario_redis_kills(
    redis: Redis, port: int, *, clients: int, kills: int, outage: float, recover: float
) -> dict[str, Any]:
    from websockets.exceptions import ConnectionClosed

    from headrace.layers.redis import RedisChannelLayer

    room = "chaos"
    url = f"ws://127.0.0.1:{port}/ws/chat/{room}/"
    sockets: list[Any] = []
    for start in range(0, clients, 50):
        batch, errors, _ = await open_many(
            url, f"http://127.0.0.1:{port}", min(50, clients - start)
        )
        if errors:
            raise RuntimeError(f"could not connect the room's clients: {errors}")
        sockets += batch
    received: list[set[int]] = [set() for _ in sockets]
    close_codes: collections.Counter[str] = collections.Counter()

    async def listen(index: int, ws: Any) -> None:
        try:
            async for raw in ws:
                received[index].add(json.loads(raw)["message"])
        except ConnectionClosed:
            pass
        close_codes[str(ws.close_code)] += 1

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
    layer = RedisChannelLayer(hosts=[redis.url], prefix="chaos", capacity=10_000)
    # Warm up: wait until one message reaches every client.
    probe = -1
    deadline = time.monotonic() + 20
    while not all(probe in got for got in received):
        if time.monotonic() > deadline:
            raise RuntimeError("the room never received a message from every client")
        probe -= 1
        await layer.group_send(room, {"type": "chat.message", "message": probe})
        await asyncio.sleep(0.1)

    sends: list[tuple[int, float, bool]] = []
    send_errors: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()

    async def produce() -> None:
        seq = 0
        while not stop.is_set():
            at = time.monotonic()
            try:
                await asyncio.wait_for(
                    layer.group_send(room, {"type": "chat.message", "message": seq}), 2.0
                )
                ok = True
            except Exception as error:
                ok = False
                send_errors[type(error).__name__] += 1
            sends.append((seq, at, ok))
            seq += 1
            await asyncio.sleep(0.01)

    producer = asyncio.create_task(produce())
    await asyncio.sleep(recover)
    outages: list[tuple[float, float]] = []
    for _ in range(kills):
        killed = time.monotonic()
        redis.kill()
        await asyncio.sleep(outage)
        await asyncio.to_thread(redis.start)
        outages.append((killed, time.monotonic()))
        await asyncio.sleep(recover)
    stop.set()
    await producer
    await asyncio.sleep(2.0)  # let the last messages arrive
    still_open = sum(1 for ws in sockets if ws.close_code is None)
    await close_all(sockets)
    await asyncio.gather(*listeners, return_exceptions=True)
    await layer.close()

    count = collections.Counter(seq for got in received for seq in got)
    n = len(sockets)

    def lost(window: list[tuple[int, float, bool]]) -> int:
        return sum(n - count[seq] for seq, _, _ in window)

    # Messages sent in the last moments before a kill may still sit in Redis when it dies
    # (nothing persists): they are counted apart, as "in flight at the kill".
    flight = 0.2
    first_kill = outages[0][0] if outages else float("inf")
    baseline = [s for s in sends if s[1] < first_kill - flight]
    report: list[dict[str, Any]] = []
    for index, (killed, up) in enumerate(outages):
        end = outages[index + 1][0] - flight if index + 1 < len(outages) else float("inf")
        in_flight = [s for s in sends if killed - flight <= s[1] < killed]
        during = [s for s in sends if killed <= s[1] < up]
        after = [s for s in sends if up <= s[1] < end]
        flowing = next((at - up for seq, at, ok in after if count[seq] == n), None)
        report.append(
            {
                "outage_seconds": round(up - killed, 2),
                "deliveries_lost_in_flight_at_kill": lost(in_flight),
                "sent_during": len(during),
                "send_errors_during": sum(1 for s in during if not s[2]),
                "deliveries_lost_during": lost(during),
                "sent_after": len(after),
                "send_errors_after": sum(1 for s in after if not s[2]),
                "deliveries_lost_after": lost(after),
                "messages_reaching_nobody_after": sum(1 for s in after if s[2] and not count[s[0]]),
                "seconds_until_every_client_receives": (
                    round(flowing, 3) if flowing is not None else None
                ),
            }
        )
    return {
        "clients": n,
        "kills": kills,
        "baseline_messages": len(baseline),
        "baseline_deliveries_lost": lost(baseline),
        "outages": report,
        "send_errors": dict(send_errors),
        "clients_still_connected": still_open,
        "close_codes": dict(close_codes),
    }


def scenario_runworker(
    redis: Redis, directory: Path, signum: signal.Signals, *, messages: int, job_ms: int
) -> dict[str, Any]:
    from headrace.layers.redis import RedisChannelLayer

    done = directory / f"done-{signum.name}"
    done.write_text("")
    env = project_env(redis, CHAOS_DONE_FILE=str(done))
    channel = "chaos-work"

    async def send(seqs: range) -> None:
        layer = RedisChannelLayer(hosts=[redis.url], prefix="chaos", capacity=100_000)
        for seq in seqs:
            await layer.send(channel, {"type": "job.run", "seq": seq, "ms": job_ms})
        await layer.close()

    def finished() -> list[int]:
        return [int(line) for line in done.read_text().split()]

    def worker(log: Path) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "django", "runworker", channel, "--no-delay"]
        command += ["--concurrency", "20"]
        with log.open("wb") as output:
            return subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)

    def wait(condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.02)

    asyncio.run(send(range(messages)))
    first = worker(directory / f"worker-{signum.name}-1.log")
    wait(lambda: len(finished()) >= messages // 3, 120, "a third of the jobs")
    at_signal = len(finished())
    first.send_signal(signum)
    first.wait(60)
    by_first = len(finished())
    # A second worker drains what is left; a last job (seq = messages) marks the end (FIFO).
    second = worker(directory / f"worker-{signum.name}-2.log")
    asyncio.run(send(range(messages, messages + 1)))
    wait(lambda: messages in finished(), 120, "the drain")
    second.send_signal(signal.SIGTERM)
    second.wait(60)
    results = [seq for seq in finished() if seq < messages]
    unique = set(results)
    return {
        "signal": signum.name,
        "jobs": messages,
        "job_ms": job_ms,
        "concurrency": 20,
        "finished_when_signalled": at_signal,
        "finished_by_signalled_worker": by_first,
        "finished_after_signal": by_first - at_signal,
        "lost": messages - len(unique),
        "run_twice": len(results) - len(unique),
        "exit_code": first.returncode,
    }


#: The ``task-kills`` scenario's worker processes, and each one's concurrency.
TASK_WORKERS = 3
TASK_CONCURRENCY = 10


def scenario_task_kills(
    redis_url: str,
    directory: Path,
    *,
    jobs: int,
    kill_every: float,
    kill_for: float,
    lease: float = 3.0,
    drain_timeout: float = 120.0,
) -> dict[str, Any]:
    """Durable tasks on Redis while their workers are SIGKILLed: what ran twice, what was lost.

    ``jobs`` tasks (:func:`bench._chaos_tasks.record`) are enqueued on the Redis task backend
    first, then :data:`TASK_WORKERS` ``runworker --tasks`` processes start; once they hold a
    job in every slot, the oldest worker is SIGKILLed every ``kill_every`` seconds for
    ``kill_for`` seconds and a replacement started at once. Then the survivors drain the queue
    (at most ``drain_timeout`` seconds) and every job is read back from Redis.

    Each task records its start and its end, then the worker acknowledges. It also sleeps: the
    pause is chosen so that the work, at full speed, lasts the whole kill window (``kill_for *
    workers * concurrency / jobs`` seconds; 0.27 s with the defaults). No-op tasks would drain
    20,000 jobs in seconds and the later kills would hit idle workers, proving nothing; with
    the pause every kill takes a worker with all its slots busy (claims, runs and
    acknowledgements in progress), and the capacity the kills cost makes the backlog outlast
    the window. The lease is short (3 s; production's default is 30 s) so that the jobs of a
    killed worker come back within the run, and long enough that a worker slowed by a loaded
    machine keeps its leases (``stale_acks`` counts it if not).

    Expected: 0 lost (every job SUCCESSFUL or dead-lettered); the jobs run more than once are
    those in hand at a kill, and each carries one ``WorkerLost`` error per extra run.
    """
    from bench._chaos_tasks import FINISHED, STARTED, record
    from bench._chaos_tasks_settings import task_backend
    from redis import Redis as Client

    from headrace.tasks.backends.redis import RedisTaskBackend

    worker_lost = "headrace.tasks.exceptions.WorkerLost"
    backend = RedisTaskBackend("default", task_backend(redis_url, lease))
    client = Client.from_url(redis_url)
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="bench._chaos_tasks_settings",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        CHAOS_REDIS_URL=redis_url,
        CHAOS_TASK_LEASE=repr(lease),
        PYTHONUNBUFFERED="1",
    )
    logs: list[Path] = []

    def worker() -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "django", "runworker", "--tasks", "default"]
        command += ["--concurrency", str(TASK_CONCURRENCY), "--shutdown-timeout", "5"]
        log = directory / f"task-worker-{len(logs)}.log"
        logs.append(log)
        with log.open("wb") as output:
            return subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
            )

    def wait(condition: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    load_before = os.getloadavg()
    pause = kill_for * TASK_WORKERS * TASK_CONCURRENCY / jobs
    started_at = time.monotonic()
    ids = [backend.enqueue(record, (number, pause), {}).id for number in range(jobs)]
    enqueue_seconds = time.monotonic() - started_at

    running = [worker() for _ in range(TASK_WORKERS)]
    killed: list[int] = []
    try:
        busy = TASK_WORKERS * TASK_CONCURRENCY
        if not wait(lambda: backend.queue_statistics("default").running >= busy, 60):
            raise RuntimeError("the task workers never filled their slots")
        kills_from = time.monotonic()
        while (len(killed) + 1) * kill_every <= kill_for:
            time.sleep(max(0.0, kills_from + (len(killed) + 1) * kill_every - time.monotonic()))
            victim = running.pop(0)  # the oldest: round robin
            victim.kill()
            victim.wait(10)
            killed.append(victim.pid)
            running.append(worker())
        kills_ended = time.monotonic()

        def drained() -> bool:
            stats = backend.queue_statistics("default")
            return stats.counters["successful"] + stats.dead >= jobs and not (
                stats.ready or stats.delayed or stats.running
            )

        finished_in_time = wait(drained, drain_timeout)
        drain_seconds = time.monotonic() - kills_ended
    finally:
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def runs(key: str) -> dict[int, list[int]]:
        found: dict[int, list[int]] = collections.defaultdict(list)
        for entry in client.lrange(key, 0, -1):
            number, pid = entry.split()
            found[int(number)].append(int(pid))
        return found

    starts, ends = runs(STARTED), runs(FINISHED)
    stats = backend.queue_statistics("default")
    dead = set(backend.job_ids("default", "dead"))
    states: collections.Counter[str] = collections.Counter()
    lost: list[int] = []
    repeated: list[int] = []
    repeated_with_worker_lost = 0
    runs_without_worker_lost = 0  # extra runs beyond the job's WorkerLost errors
    worker_lost_errors = 0
    successful_unrecorded = 0  # SUCCESSFUL, yet its task never recorded a start: a bug
    for number, job_id in enumerate(ids):
        job = backend.get_job(job_id)
        state = job.state.value if job is not None else "MISSING"
        states[state] += 1
        losses = (
            0
            if job is None
            else sum(1 for error in job.errors if error.exception_class_path == worker_lost)
        )
        worker_lost_errors += losses
        if state != "SUCCESSFUL" and job_id not in dead:
            lost.append(number)
        recorded = len(starts.get(number, ()))
        successful_unrecorded += state == "SUCCESSFUL" and not recorded
        if recorded > 1:
            repeated.append(number)
            repeated_with_worker_lost += losses > 0
        runs_without_worker_lost += max(0, recorded - 1 - losses)
    killed_pids = set(killed)
    cut_off = [  # tasks the victim had started and not finished when it was killed
        sum(1 for number, pids in starts.items() if pid in pids and pid not in ends.get(number, []))
        for pid in killed
    ]
    client.close()
    return {
        "jobs": jobs,
        "workers": TASK_WORKERS,
        "concurrency": TASK_CONCURRENCY,
        "task_pause_seconds": round(pause, 3),
        "lease_seconds": lease,
        "max_deliveries": 3,
        "enqueue_seconds": round(enqueue_seconds, 1),
        "workers_killed": len(killed),
        "states": dict(states),
        "successful": states["SUCCESSFUL"],
        "dead_lettered": len(dead),
        "lost": len(lost),
        "lost_sample": lost[:20],
        "successful_without_a_recorded_run": successful_unrecorded,
        "ran_more_than_once": len(repeated),
        "ran_more_than_once_with_worker_lost": repeated_with_worker_lost,
        "extra_runs_without_a_worker_lost_error": runs_without_worker_lost,
        "extra_runs": sum(len(pids) - 1 for pids in starts.values() if len(pids) > 1),
        "extra_runs_after_a_kill": sum(
            1 for pids in starts.values() for pid in pids[:-1] if pid in killed_pids
        ),
        "finished_more_than_once": sum(1 for pids in ends.values() if len(pids) > 1),
        "worker_lost_errors": worker_lost_errors,
        "tasks_cut_off_at_each_kill": cut_off,
        "counters": {
            name: stats.counters[name] for name in ("enqueued", "claimed", "successful", "lost")
        }
        | {"dead": stats.counters["dead"], "stale_acks": stats.counters["stale_acks"]},
        "drained": finished_in_time,
        "drain_seconds_after_last_kill": round(drain_seconds, 1),
        "kill_window_seconds": round(kills_ended - kills_from, 1),
        "seconds": round(time.monotonic() - started_at, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "worker_logs": worker_log_summary(logs),
    }


def worker_log_summary(logs: list[Path]) -> dict[str, Any]:
    """What the task workers logged: tracebacks, warnings and errors (a sample of each kind).
    The start-up check's warning that the bench's Redis keeps nothing on disk (headrace.W110)
    is expected: this scenario never restarts Redis."""
    lines = [line for log in logs for line in log.read_text(errors="replace").splitlines()]
    logged = collections.Counter(
        level
        for line in lines
        for level in ("WARNING", "ERROR", "CRITICAL")
        if f" {level} " in line
    )
    return {
        "lines": len(lines),
        "tracebacks": sum(1 for line in lines if line.startswith("Traceback")),
        "logged": dict(logged),
        "sample": [line for line in lines if " WARNING " in line or " ERROR " in line][:8],
    }


# -- main -------------------------------------------------------------------------------------

SCENARIOS = ("origins", "connects", "redis-kills", "runworker", "task-kills")


async def run_server_scenarios(redis: Redis, port: int, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "origins" in args.scenarios:
        results["origins"] = await hostile_matrix(port, "/ws/chat/origins/")
    if "connects" in args.scenarios:
        results["connects"] = await scenario_connects(port, args.connects)
    if "redis-kills" in args.scenarios:
        results["redis_kills"] = await scenario_redis_kills(
            redis,
            port,
            clients=args.clients,
            kills=args.kills,
            outage=args.outage,
            recover=args.recover,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--connects", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--outage", type=float, default=1.0, help="seconds Redis stays down")
    parser.add_argument("--recover", type=float, default=3.0, help="seconds between outages")
    parser.add_argument("--jobs", type=int, default=600, help="runworker jobs per signal")
    parser.add_argument("--job-ms", type=int, default=100)
    parser.add_argument("--task-jobs", type=int, default=20_000, help="task-kills: tasks")
    parser.add_argument("--kill-every", type=float, default=5.0, help="task-kills: seconds")
    parser.add_argument("--kill-for", type=float, default=180.0, help="task-kills: seconds")
    args = parser.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    started = time.monotonic()
    output: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "settings": {k: v for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="headrace-chaos-") as tmp:
        directory = Path(tmp)
        redis = Redis(directory)
        redis.start()
        try:
            if {"origins", "connects", "redis-kills"} & set(args.scenarios):
                log = directory / "server.log"
                with uvicorn_server(redis, log) as port:
                    output.update(asyncio.run(run_server_scenarios(redis, port, args)))
                output["server_log"] = log_summary(log)
            if "runworker" in args.scenarios:
                output["runworker"] = [
                    scenario_runworker(
                        redis, directory, signum, messages=args.jobs, job_ms=args.job_ms
                    )
                    for signum in (signal.SIGTERM, signal.SIGKILL)
                ]
            if "task-kills" in args.scenarios:
                import django

                os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench._chaos_tasks_settings")
                django.setup()
                output["task_kills"] = scenario_task_kills(
                    redis.url,
                    directory,
                    jobs=args.task_jobs,
                    kill_every=args.kill_every,
                    kill_for=args.kill_for,
                )
        finally:
            redis.stop()
    output["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
