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

Prints one JSON document. Bounded versions of ``origins`` and ``connects`` run in ``make test``
(tests/test_chaos_bounded.py); docs/explanation/reliability.md shows the results.

    python bench/chaos.py                            # everything, default sizes
    python bench/chaos.py --scenarios origins,connects --connects 300
    python bench/chaos.py --scenarios redis-kills --clients 50 --kills 2
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


# -- main -------------------------------------------------------------------------------------

SCENARIOS = ("origins", "connects", "redis-kills", "runworker")


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
        finally:
            redis.stop()
    output["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
