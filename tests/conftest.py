"""Fixtures shared by the whole suite.

``layer`` / ``make_layer`` are parametrized over every backend in ``tests/layer_backends.py``,
with a :class:`~headrace.layers.ManualClock` (``clock``) so expiry and delay never sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from headrace.layers import BaseChannelLayer, ManualClock
from tests.layer_backends import LAYER_BACKENDS

MakeLayer = Callable[..., Awaitable[BaseChannelLayer]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=sorted(LAYER_BACKENDS))
async def make_layer(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[MakeLayer]:
    """An async function that makes a fresh layer of the current backend with extra CONFIG."""
    factory = LAYER_BACKENDS[request.param]
    made: list[BaseChannelLayer] = []

    async def make(**config: Any) -> BaseChannelLayer:
        layer = factory(request, clock, **config)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.flush()
        await layer.close()


@pytest.fixture
async def layer(make_layer: MakeLayer) -> BaseChannelLayer:
    """A fresh layer of the current backend with the default CONFIG."""
    return await make_layer()


@pytest.fixture(autouse=True, scope="session")
def _database_reachable_from_handler_threads(django_db_blocker: Any) -> Iterator[None]:
    """Let consumers close old database connections in any test, as they do in production.

    Consumers (ours and Channels') call ``close_old_connections`` on the ORM's shared thread.
    A test that used the database leaves that thread holding a connection, and in a later test
    that did not ask for the database pytest-django's blocker would turn the routine cleanup
    into an error in whichever handler ran it. Tests that need tables still ask for ``db`` or
    ``transactional_db``; without them there are no tables, so stray queries still fail.
    """
    with django_db_blocker.unblock():
        yield


# -- the database task backend (issue 15) ------------------------------------------------------

TASK_TABLES = (
    "headrace_taskjob",
    "headrace_taskjobresult",
    "headrace_taskdeadletter",
    "headrace_taskworkerheartbeat",
    "headrace_taskscheduleslot",
    "headrace_taskcounter",
)


def _add_database(alias: str, entry: dict[str, Any]) -> None:
    """Make ``alias`` a Django database for the rest of the session."""
    from django.db import connections

    configured = connections.configure_settings(
        {"default": connections.settings["default"], alias: dict(entry)}
    )
    connections.settings[alias] = configured[alias]


@pytest.fixture(scope="session")
def task_postgres_alias(request: pytest.FixtureRequest) -> Iterator[str]:
    """A ``DATABASES`` alias on the session's own PostgreSQL server, migrated."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    from tests.postgres_server import postgres
    from tests.task_backends import POSTGRES_ALIAS

    server = postgres(request.config)
    server.create_database("headrace_tasks")
    entry = server.database_settings("headrace_tasks")
    settings.DATABASES[POSTGRES_ALIAS] = entry
    _add_database(POSTGRES_ALIAS, entry)
    call_command("migrate", database=POSTGRES_ALIAS, verbosity=0)
    connections[POSTGRES_ALIAS].close()
    yield POSTGRES_ALIAS
    connections[POSTGRES_ALIAS].close()
    connections.settings.pop(POSTGRES_ALIAS, None)
    settings.DATABASES.pop(POSTGRES_ALIAS, None)


@pytest.fixture
def task_postgres(task_postgres_alias: str) -> str:
    """The PostgreSQL alias, with the task tables emptied."""
    from django.db import connections

    with connections[task_postgres_alias].cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TASK_TABLES)}")
    return task_postgres_alias


@pytest.fixture(scope="session")
def task_sqlite_alias(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``DATABASES`` alias on an SQLite file of the session's own, migrated."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    from tests.task_backends import SQLITE_ALIAS

    path = tmp_path_factory.mktemp("sqlite") / "tasks.sqlite3"
    entry = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path), "TEST": {"NAME": str(path)}}
    settings.DATABASES[SQLITE_ALIAS] = entry
    _add_database(SQLITE_ALIAS, entry)
    call_command("migrate", database=SQLITE_ALIAS, verbosity=0)
    with connections[SQLITE_ALIAS].cursor() as cursor:
        cursor.execute("PRAGMA journal_mode = WAL")
    connections[SQLITE_ALIAS].close()
    yield SQLITE_ALIAS
    connections[SQLITE_ALIAS].close()
    connections.settings.pop(SQLITE_ALIAS, None)
    settings.DATABASES.pop(SQLITE_ALIAS, None)


@pytest.fixture
def task_sqlite(task_sqlite_alias: str) -> str:
    """The SQLite alias, with the task tables emptied."""
    from django.db import connections

    with connections[task_sqlite_alias].cursor() as cursor:
        for table in TASK_TABLES:
            cursor.execute(f"DELETE FROM {table}")
    return task_sqlite_alias


def pytest_configure(config: pytest.Config) -> None:
    """The Redis task backends of tests/task_backends.py start servers through this config."""
    from tests.task_backends import PYTEST_CONFIG

    PYTEST_CONFIG[:] = [config]
