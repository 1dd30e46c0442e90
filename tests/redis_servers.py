"""Real Redis servers for the tests: started on free ports in temporary directories.

Never the shared Redis on 6379. Servers start lazily, once per test session, and are killed
(with their directories removed) when the session ends. Everything goes through
:func:`servers` (``servers(request.config)``), so the conformance suite's layer factory and
the Redis test modules share the same servers.

Kinds: standalone, password + ACL user, TLS (with a throwaway CA and certificate), Sentinel
(master, replica, sentinel), several independent hosts, and a 3-master Redis Cluster.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

__all__ = ["RedisServer", "Servers", "servers"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
ACL_USER = "alice"
ACL_PASSWORD = "wonderland-secret"
DEFAULT_PASSWORD = "default-secret"


def free_port(*, with_bus: bool = False) -> int:
    """A free port; ``with_bus``: port + 10000 (a cluster node's bus port) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def wait_until(check: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as error:
            last = error
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what} (last error: {last!r})")


class RedisServer:
    """One redis-server process (or sentinel) that a test may stop, start and restart."""

    def __init__(self, directory: Path, args: list[str], *, port: int, tls: bool = False) -> None:
        self.directory = directory
        self.args = args
        self.port = port
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, *self.args],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"redis-server on port {self.port} exited ({self.process.returncode})"
            )
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            if self.tls:
                return True
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, **options: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **options)  # type: ignore[arg-type]


class Servers:
    """Starts each kind of server on first use; :meth:`close` kills them all."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="headrace-redis-"))
        self.started: list[RedisServer] = []
        self._named: dict[str, object] = {}

    def new(self, *extra: str, name: str = "server", tls: bool = False) -> RedisServer:
        """A fresh standalone server (the caller may restart or stop it)."""
        for attempt in range(5):  # a free port can be taken by someone else before we bind it
            try:
                return self._new(extra, name, tls)
            except RuntimeError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _new(self, extra: tuple[str, ...], name: str, tls: bool) -> RedisServer:
        port = free_port(with_bus="--cluster-enabled" in extra)
        directory = self.root / f"{name}-{port}"
        directory.mkdir()
        port_args = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
        args = [
            *port_args,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--protected-mode", "no",
            *extra,
        ]  # fmt: skip
        server = RedisServer(directory, args, port=port, tls=tls)
        self.started.append(server)
        try:
            server.start()
        except RuntimeError:
            server.stop()
            self.started.remove(server)
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return server

    def _once(self, name: str, make: object) -> object:
        if name not in self._named:
            self._named[name] = make()  # type: ignore[operator]
        return self._named[name]

    def standalone(self) -> RedisServer:
        return self._once("standalone", lambda: self.new(name="standalone"))  # type: ignore[return-value]

    def acl(self) -> RedisServer:
        def make() -> RedisServer:
            return self.new(
                "--requirepass", DEFAULT_PASSWORD,
                "--user", f"{ACL_USER}", "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all",
                name="acl",
            )  # fmt: skip

        return self._once("acl", make)  # type: ignore[return-value]

    def tls(self) -> tuple[RedisServer, Path]:
        def make() -> tuple[RedisServer, Path]:
            directory = self.root / "tls-certs"
            directory.mkdir()
            ca, cert, key = make_certificates(directory)
            server = self.new(
                "--tls-cert-file", str(cert),
                "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(ca),
                "--tls-auth-clients", "no",
                name="tls",
                tls=True,
            )  # fmt: skip
            return server, ca

        return self._once("tls", make)  # type: ignore[return-value]

    def several(self) -> list[RedisServer]:
        return self._once(  # type: ignore[return-value]
            "several", lambda: [self.new(name=f"shard{n}") for n in range(3)]
        )

    def sentinel(self) -> tuple[RedisServer, RedisServer, RedisServer]:
        """(master, replica, sentinel) watching master name ``mymaster``."""

        def make() -> tuple[RedisServer, RedisServer, RedisServer]:
            master = self.new(name="master")
            replica = self.new("--replicaof", "127.0.0.1", str(master.port), name="replica")
            port = free_port()
            directory = self.root / f"sentinel-{port}"
            directory.mkdir()
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {directory}\n"
                f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 5000\n"
                "sentinel parallel-syncs mymaster 1\n"
            )
            sentinel = RedisServer(directory, [str(config), "--sentinel"], port=port)
            self.started.append(sentinel)
            sentinel.start()
            wait_until(
                lambda: replica.client().info("replication")["master_link_status"] == "up",
                "the replica to sync",
            )
            return master, replica, sentinel

        return self._once("sentinel", make)  # type: ignore[return-value]

    def cluster(self) -> list[RedisServer]:
        """Three masters sharing the 16384 slots."""

        def make() -> list[RedisServer]:
            nodes = [
                self.new(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "3000",
                    name=f"cluster{n}",
                )
                for n in range(3)
            ]
            ranges = [(0, 5460), (5461, 10922), (10923, 16383)]
            for node, (low, high) in zip(nodes, ranges, strict=True):
                with node.client() as client:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
            with nodes[0].client() as client:
                for node in nodes[1:]:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)

            def ready() -> bool:
                for node in nodes:
                    with node.client() as client:
                        info = client.execute_command("CLUSTER", "INFO")
                        text = info.decode() if isinstance(info, bytes) else str(info)
                        if "cluster_state:ok" not in text or "cluster_known_nodes:3" not in text:
                            return False
                return True

            wait_until(ready, "the cluster to form", timeout=30)
            return nodes

        return self._once("cluster", make)  # type: ignore[return-value]

    def close(self) -> None:
        for server in reversed(self.started):
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


_SERVERS_KEY = pytest.StashKey[Servers]()


def servers(config: pytest.Config) -> Servers:
    """The session's :class:`Servers` (made on first use, closed at the end of the session)."""
    found = config.stash.get(_SERVERS_KEY, None)
    if found is None:
        found = config.stash[_SERVERS_KEY] = Servers()
        config.add_cleanup(found.close)
    return found


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA, and a certificate for 127.0.0.1/localhost signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "headrace test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths
