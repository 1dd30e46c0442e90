"""A real PostgreSQL server for the tests (and bench/), started in a temporary directory.

Never the server that may already run on this machine: ``initdb`` makes a fresh cluster in a
temporary directory, owned by an unprivileged user (PostgreSQL refuses to run as root; when we
are root, the system user ``headrace-pg`` is created if missing), listening on a free port of
127.0.0.1 and on a unix socket in that directory. :func:`postgres` starts one lazily per test
session and stops it (and removes the directory) when the session ends; ``database_settings``
gives a ``DATABASES`` entry for it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PostgresServer", "find_postgres_bin", "postgres"]

SERVER_USER = "headrace-pg"
DATABASE_USER = "headrace"


def find_postgres_bin() -> Path:
    """The directory of ``initdb`` and ``postgres`` (Debian keeps them off the PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(
            "PostgreSQL's initdb was not found (on the PATH or /usr/lib/postgresql/*/bin); "
            "`make system-deps` installs it"
        )
    return Path(candidates[-1]).parent


def _server_user() -> str | None:
    """The user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=True,
            capture_output=True,
        )
    return SERVER_USER


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One postgres process on a fresh cluster (see the module docstring). ``durable``
    False turns fsync off (the tests' server); the benchmarks keep the defaults."""

    def __init__(self, *, durable: bool = False) -> None:
        self.bin = find_postgres_bin()
        self.user = _server_user()
        self.directory = Path(tempfile.mkdtemp(prefix="headrace-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self.durable = durable
        self.process: subprocess.Popen[bytes] | None = None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
            self.directory.chmod(0o700)

    def _as_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> None:
        if not self.data.exists():
            subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    DATABASE_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--locale=C",
                ],
                check=True,
                capture_output=True,
                cwd=self.directory,
                **self._as_user(),
            )
        settings = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.directory}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=64MB",
        ]
        if not self.durable:
            settings += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), *settings],
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "server.log", "ab"),  # noqa: SIM115
            cwd=self.directory,
            **self._as_user(),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with self.connect("postgres") as conn:
                    conn.execute("SELECT 1")
                return
            except Exception as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "server.log").read_text(errors="replace")
                    raise RuntimeError(f"postgres did not start ({error}):\n{log}") from error
                time.sleep(0.05)

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host=str(self.directory),
            port=self.port,
            user=DATABASE_USER,
            dbname=dbname,
            autocommit=True,
        )

    def create_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')

    def database_settings(self, name: str) -> dict[str, Any]:
        """A ``DATABASES`` entry for database ``name`` of this server."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": DATABASE_USER,
            "HOST": str(self.directory),
            "PORT": str(self.port),
            "TEST": {"NAME": name},
        }

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: disconnects clients
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


_KEY = pytest.StashKey[PostgresServer]()


def postgres(config: pytest.Config) -> PostgresServer:
    """The session's PostgreSQL server, started on first use and stopped at the end."""
    found = config.stash.get(_KEY, None)
    if found is None:
        found = PostgresServer()
        config.add_cleanup(found.close)
        found.start()
        config.stash[_KEY] = found
    return found
