"""The connections of the database task backend: Django's (joining the caller's transaction)
and the backend's own (usable on an event loop, where Django's is not).

Both take statements with named parameters (``%(name)s``) and return rows as tuples.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol

from django.db import connections, transaction

__all__ = ["DjangoExecutor", "Executor", "OwnConnection", "connect_postgres", "is_disconnect"]

_NAMED = re.compile(r"%\((\w+)\)s")
_TUPLES_OK: Final = 2  # psycopg.pq.ExecStatus.TUPLES_OK: the statement returned rows


class Executor(Protocol):
    def execute(self, statement: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]: ...

    def transaction(self) -> contextlib.AbstractContextManager[Any]: ...


class DjangoExecutor:
    """Django's connection of this thread: joins the caller's transaction."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def execute(self, statement: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with connections[self.alias].cursor() as cursor:
            cursor.execute(statement, params)
            return list(cursor.fetchall()) if cursor.description else []

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        return transaction.atomic(using=self.alias)

    @property
    def in_atomic_block(self) -> bool:
        return bool(connections[self.alias].in_atomic_block)


class OwnConnection:
    """A connection of the backend's own, shared by threads (one statement at a time),
    opened from the ``DATABASES`` entry and reopened after an error that broke it.
    :meth:`transaction` nests (PostgreSQL: a savepoint; SQLite: the inner one joins the
    outer one)."""

    def __init__(self, alias: str, vendor: str, *, durable: bool) -> None:
        self.alias = alias
        self.vendor = vendor
        self.durable = durable
        self.lock = threading.RLock()
        self.conn: Any = None
        self._qmark: dict[str, str] = {}
        self._depth = 0  # SQLite: transactions open (nested ones join the outer one)

    def _connect(self) -> Any:
        wrapper = connections[self.alias]
        params = dict(wrapper.get_connection_params())
        if self.vendor == "postgresql":
            return connect_postgres(wrapper, params, durable=self.durable)
        import sqlite3

        params.pop("detect_types", None)
        conn = sqlite3.connect(**params, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
        for command in getattr(wrapper, "init_commands", ()):
            if command.strip():
                conn.execute(command)
        return conn

    def execute(self, statement: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with self.lock:
            if self.conn is None:
                self.conn = self._connect()
            if self.vendor == "sqlite":
                converted = self._qmark.get(statement)
                if converted is None:
                    converted = self._qmark[statement] = _NAMED.sub(r":\1", statement)
                statement = converted
            try:
                cursor = self.conn.execute(statement, params)
                if self.vendor == "postgresql":
                    # Not cursor.description: it builds a Column object per column.
                    result = cursor.pgresult
                    if result is None or result.status != _TUPLES_OK:
                        return []
                    rows: list[tuple[Any, ...]] = cursor.fetchall()
                    return rows
                return list(cursor.fetchall()) if cursor.description else []
            except Exception:
                self._drop_if_broken()
                raise

    def _drop_if_broken(self) -> None:
        conn = self.conn
        if conn is not None and (getattr(conn, "broken", False) or getattr(conn, "closed", False)):
            self.close()  # the next statement opens a new connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock:
            if self.conn is None:
                self.conn = self._connect()
            if self.vendor == "postgresql":
                try:
                    with self.conn.transaction():
                        yield
                except Exception:
                    self._drop_if_broken()
                    raise
                return
            if self._depth:  # inside this connection's transaction: part of it
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0

    def close(self) -> None:
        with self.lock:
            conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def is_disconnect(error: BaseException) -> bool:
    """Whether ``error`` says the connection or the server failed (worth trying again), not
    that the database refused the statement (the same statement would fail again)."""
    if isinstance(error, OSError):
        return True
    import sqlite3

    if isinstance(error, sqlite3.OperationalError):  # locked, busy, I/O
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(
        error, psycopg.OperationalError | psycopg.InterfaceError
    )


def connect_postgres(wrapper: Any, params: dict[str, Any], *, durable: bool = True) -> Any:
    """A psycopg connection (autocommit) from a Django connection's parameters. Prepared
    statements are on (psycopg's default) unless ``OPTIONS`` sets ``prepare_threshold``."""
    import psycopg

    params.pop("cursor_factory", None)  # Django's binds parameters client-side
    params.pop("pool", None)
    if "prepare_threshold" not in wrapper.settings_dict["OPTIONS"]:
        params.pop("prepare_threshold", None)
    conn = psycopg.connect(**params, autocommit=True)
    if not durable:
        conn.execute("SET synchronous_commit = off")
    return conn
