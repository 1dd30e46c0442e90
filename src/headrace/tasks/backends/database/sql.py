"""The statements of the database task backend, for PostgreSQL and for SQLite.

Tables (Django models in :mod:`.models`, app ``headrace``; ``t`` is "now" in seconds since the
epoch, from the database's clock — ``clock_timestamp()`` on PostgreSQL, ``julianday('now')``
on SQLite — unless the backend was given a ``clock``, whose time is then passed in):

``headrace_taskjob`` (live jobs: READY or RUNNING)
    ``seq`` (primary key, FIFO order), ``job_id`` (unique: ``headrace_job_id``), the job's
    fields, and for a RUNNING job its lease: ``lease_token``, ``lease_worker``,
    ``lease_expires_at``. Indexes:

    - ``headrace_job_ready`` on ``(queue, priority DESC, due_at, seq) WHERE state = 'READY'``:
      the claim walks it in order and stops at the first due row it can lock;
    - ``headrace_job_lease`` on ``lease_expires_at WHERE state = 'RUNNING'``: finding lapsed
      leases touches only those;
    - ``headrace_job_worker`` on ``lease_worker WHERE state = 'RUNNING'``: a heartbeat renews
      its worker's leases;
    - unique ``idempotency_key``: only live jobs are in this table, so it is exactly "one live
      job per key".
``headrace_taskjobresult`` (finished jobs; ``job_id`` unique: ``headrace_result_id``)
    Written by the statement that finishes the job (the row leaves ``taskjob`` in the same
    statement); ``headrace_result_expiry`` on ``result_expires_at`` for the purge.
``headrace_taskdeadletter``
    Jobs whose lease lapsed ``max_deliveries`` times; indexes ``headrace_dead_job`` on
    ``job_id`` and ``headrace_dead_at`` on ``dead_at``.
``headrace_taskworkerheartbeat``
    One row per running worker (primary key ``worker_id``); ``headrace_worker_seen`` on
    ``last_seen_at``.

Unique columns are unique *constraints*, not ``unique=True`` fields: on PostgreSQL Django adds
a second (LIKE) index to the latter, which every insert and delete would maintain.
``headrace_taskscheduleslot``
    The last slot fired per schedule entry (primary key ``entry``): :attr:`Dialect.fire_slot`
    moves it forward only (an upsert whose update has ``WHERE slot < new``), in the same
    transaction as the slot's job; of schedulers racing for a slot, one gets a row back.

The state table of :mod:`headrace.tasks.states` is applied in the WHERE clauses: each
statement that moves a job names the state it moves it from (:func:`sources`), so a move the
table forbids matches no row. Leaving RUNNING also needs the lease token the claim wrote.

On PostgreSQL each hot statement is one round trip: a claim is one ``UPDATE`` whose subquery
takes the best ``n`` due rows ``FOR UPDATE SKIP LOCKED`` (the lease is written in the same
transaction, the statement's own; ``n`` is the worker's free slots); finishing is one
``DELETE ... RETURNING`` feeding an ``INSERT`` into the results, for one job or for a batch
(:attr:`PostgresDialect.settle_batch`: parallel arrays, one element per job); enqueue and
requeue send ``NOTIFY headrace_tasks, 'q<queue>'`` in their own statement, so the
notification goes out when (and only if) the row commits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Final

from headrace.tasks.states import MOVES, JobState, Move

__all__ = [
    "JOB_COLUMNS",
    "JSON_COLUMNS",
    "NOTIFY_CHANNEL",
    "RESULT_COLUMNS",
    "ROW_COLUMNS",
    "Dialect",
    "dialect_for",
    "sources",
]

NOTIFY_CHANNEL: Final = "headrace_tasks"

JOB = "headrace_taskjob"
RESULT = "headrace_taskjobresult"
DEAD = "headrace_taskdeadletter"
WORKER = "headrace_taskworkerheartbeat"
SLOT = "headrace_taskscheduleslot"

#: The columns a job keeps in both tables, in the order rows are read.
JOB_COLUMNS: Final = (
    "job_id",
    "task_path",
    "queue",
    "priority",
    "state",
    "args",
    "kwargs",
    "options",
    "owner",
    "idempotency_key",
    "enqueued_at",
    "due_at",
    "expires_at",
    "started_at",
    "last_attempted_at",
    "worker_ids",
    "errors",
    "retries",
    "losses",
    "progress",
    "cancel_requested",
)
#: What a finished job adds (read as NULL from the live table).
RESULT_COLUMNS: Final = ("finished_at", "result_expires_at", "return_value")
ROW_COLUMNS: Final = JOB_COLUMNS + RESULT_COLUMNS
JSON_COLUMNS: Final = frozenset(
    ("args", "kwargs", "options", "worker_ids", "errors", "progress", "return_value")
)
DEAD_COLUMNS: Final = (
    "job_id",
    "task_path",
    "queue",
    "priority",
    "args",
    "kwargs",
    "options",
    "owner",
    "errors",
    "worker_ids",
    "losses",
    "dead_at",
)


def sources(move: Move) -> tuple[JobState, ...]:
    """The states ``move`` may start from, by the state table."""
    return tuple(state for (state, m) in MOVES if m is move)


def _states(move: Move) -> str:
    return ", ".join(f"'{state.value}'" for state in sources(move))


class Dialect(ABC):
    """The statements for one database vendor, with named (``%(name)s``) parameters.

    Every statement that reads the time takes ``now``: the backend's clock, or None for the
    database's own clock.
    """

    vendor: str
    now: str  #: "now" in epoch seconds from the ``now`` parameter or the database's clock
    null_result: str  #: RESULT_COLUMNS of a live job, typed
    true: str

    def json(self, name: str) -> str:
        """A JSON parameter (a JSON text)."""
        return f"%({name})s"

    def text(self, name: str) -> str:
        """A text parameter used where its type is also inferred elsewhere."""
        return f"%({name})s"

    @abstractmethod
    def append(self, column: str, name: str) -> str:
        """``column`` (a JSON array) with the string parameter ``name`` appended."""

    @abstractmethod
    def among(self, column: str, prefix: str, values: list[str]) -> tuple[str, dict[str, Any]]:
        """``column`` is one of ``values``: the condition and its parameters."""

    def __init__(self) -> None:
        live = ", ".join(f"j.{c}" for c in JOB_COLUMNS)
        self.live_columns = f"{live}, {self.null_result}"
        self.returning_live = ", ".join(JOB_COLUMNS) + f", {self.null_result}"
        self.returning_done = ", ".join(ROW_COLUMNS)
        now = self.now
        self.get = (
            f"SELECT {self.live_columns} FROM {JOB} j WHERE j.job_id = %(job_id)s "
            f"UNION ALL SELECT {', '.join(f'r.{c}' for c in ROW_COLUMNS)} FROM {RESULT} r "
            f"WHERE r.job_id = %(job_id)s AND r.result_expires_at > {now}"
        )
        self.get_by_key = (
            f"SELECT {self.live_columns} FROM {JOB} j WHERE j.idempotency_key = %(key)s"
        )
        self.set_progress = (
            f"UPDATE {JOB} SET progress = {self.json('progress')} "
            "WHERE job_id = %(job_id)s AND state = 'RUNNING'"
        )
        self.purge_results = f"DELETE FROM {RESULT} WHERE result_expires_at <= {now}"
        self.fire_slot = (
            f"INSERT INTO {SLOT} (entry, slot) VALUES (%(entry)s, %(slot)s) "
            f"ON CONFLICT (entry) DO UPDATE SET slot = excluded.slot "
            f"WHERE {SLOT}.slot < excluded.slot RETURNING slot"
        )
        self.last_fired_slot = f"SELECT slot FROM {SLOT} WHERE entry = %(entry)s"
        self.purge_workers = f"DELETE FROM {WORKER} WHERE last_seen_at < {now} - %(age)s"
        self.forget_worker = f"DELETE FROM {WORKER} WHERE worker_id = %(worker)s"
        self.heartbeat = (
            f"INSERT INTO {WORKER} (worker_id, hostname, pid, queues, started_at, last_seen_at, "
            f"running) VALUES (%(worker)s, %(hostname)s, %(pid)s, {self.json('queues')}, {now}, "
            f"{now}, %(running)s) ON CONFLICT (worker_id) DO UPDATE SET "
            "last_seen_at = excluded.last_seen_at, running = excluded.running"
        )
        self.claim_job = (
            f"UPDATE {JOB} SET state = 'RUNNING', started_at = {now}, "
            f"last_attempted_at = {now}, worker_ids = {self.append('worker_ids', 'worker')}, "
            f"lease_token = %(token)s, lease_worker = {self.text('worker')}, "
            f"lease_expires_at = {now} + %(lease)s "
            f"WHERE job_id = %(job_id)s AND state IN ({_states(Move.CLAIM)}) "
            f"RETURNING {self.returning_live}"
        )
        self.flag_cancel = (
            f"UPDATE {JOB} SET cancel_requested = {self.true} "
            f"WHERE job_id = %(job_id)s AND state = 'RUNNING' RETURNING {self.returning_live}"
        )
        self.insert_dead = (
            f"INSERT INTO {DEAD} ({', '.join(DEAD_COLUMNS)}) VALUES (%(job_id)s, "
            f"%(task_path)s, %(queue)s, %(priority)s, {self.json('args')}, "
            f"{self.json('kwargs')}, {self.json('options')}, %(owner)s, {self.json('errors')}, "
            f"{self.json('worker_ids')}, %(losses)s, {now})"
        )
        self.insert_result = self._insert_result()

    def _insert_result(self) -> str:
        values = [
            "%(state)s"
            if column == "state"
            else self.json(column)
            if column in JSON_COLUMNS
            else f"%({column})s"
            for column in JOB_COLUMNS
        ]
        now = self.now
        updates = ", ".join(f"{c} = excluded.{c}" for c in ROW_COLUMNS if c != "job_id")
        return (
            f"INSERT INTO {RESULT} ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join(values)}, "
            f"{now}, {now} + %(ttl)s, {self.json('return_value')}) "
            f"ON CONFLICT (job_id) DO UPDATE SET {updates} RETURNING {self.returning_done}"
        )

    def delete_live(self, where: str) -> str:
        """Take live rows out (a finish in two statements, inside a transaction)."""
        return f"DELETE FROM {JOB} WHERE {where} RETURNING {self.returning_live}"

    def insert(self) -> str:
        """Enqueue: a READY row unless the id is taken or the key is live; RETURNING it."""
        now = self.now
        json = self.json
        return (
            f"INSERT INTO {JOB} ({', '.join(JOB_COLUMNS)}) SELECT %(job_id)s, %(task_path)s, "
            f"%(queue)s, %(priority)s, 'READY', {json('args')}, {json('kwargs')}, "
            f"{json('options')}, %(owner)s, %(key)s, n.t, n.t + %(due)s, n.t + %(expires)s, "
            f"NULL, NULL, {json('empty')}, {json('empty')}, 0, 0, NULL, {self.false} "
            f"FROM (SELECT {now} AS t) n WHERE NOT EXISTS (SELECT 1 FROM {RESULT} r "
            "WHERE r.job_id = %(check_id)s AND r.result_expires_at > n.t) "
            f"ON CONFLICT DO NOTHING RETURNING {self.returning_live}"
        )

    false = "FALSE"

    @abstractmethod
    def claim(self, queues: list[str], limit: int = 1) -> tuple[str, dict[str, Any]]:
        """Claim the best ``limit`` due rows of ``queues`` (``worker``, ``token`` and
        ``lease`` to be added); each row read comes with its ``seq`` last, for the claim
        order."""

    def next_due(self, queues: list[str]) -> tuple[str, dict[str, Any]]:
        where, params = self.among("queue", "q", queues)
        return (
            f"SELECT (SELECT min(due_at) FROM {JOB} WHERE state = 'READY' AND {where} "
            f"AND due_at > n.t), n.t FROM (SELECT {self.now} AS t) n"
        ), params

    def count_ready(self, queues: list[str]) -> tuple[str, dict[str, Any]]:
        where, params = self.among("queue", "q", queues)
        return (
            f"SELECT count(*) FROM {JOB}, (SELECT {self.now} AS t) n "
            f"WHERE state = 'READY' AND {where} AND due_at <= n.t "
            "AND (expires_at IS NULL OR expires_at > n.t)"
        ), params

    def renew(self, workers: list[str]) -> tuple[str, dict[str, Any]]:
        where, params = self.among("lease_worker", "w", workers)
        return (
            f"UPDATE {JOB} SET lease_expires_at = {self.now} + %(lease)s "
            f"WHERE state = 'RUNNING' AND {where} "
            "RETURNING job_id, lease_token, cancel_requested"
        ), params

    def requeue(self, keys: tuple[str, ...]) -> str:
        """RUNNING -> READY (retry, lose) with ``keys`` set; ``due`` is an offset from now."""
        sets = "".join(f", {k} = {self._param(k)}" for k in keys)
        return (
            f"UPDATE {JOB} SET state = 'READY', due_at = {self.now} + %(due)s, "
            f"lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL{sets} "
            f"WHERE job_id = %(job_id)s AND state IN ({_states(Move.RETRY)}) "
            f"AND lease_token = %(token)s RETURNING {self.returning_live}{self.wake}"
        )

    wake = ""  #: appended to RETURNING lists of statements that make a job READY

    @abstractmethod
    def append_json(self, column: str, name: str) -> str:
        """``column`` (a JSON array) with the JSON parameter ``name`` appended."""

    def lapsed(self, queues: list[str]) -> tuple[str, dict[str, Any]]:
        """RUNNING jobs of ``queues`` whose lease has lapsed (a WHERE condition)."""
        where, params = self.among("queue", "q", queues)
        return (
            f"state IN ({_states(Move.LOSE)}) AND lease_expires_at < {self.now} AND {where}",
            params,
        )

    def requeue_lost(self, queues: list[str]) -> tuple[str, dict[str, Any]]:
        """Put back the lapsed jobs with losses left, with the ``lost`` error appended."""
        lapsed, params = self.lapsed(queues)
        return (
            f"UPDATE {JOB} SET state = 'READY', due_at = {self.now}, losses = losses + 1, "
            f"errors = {self.append_json('errors', 'lost')}, lease_token = NULL, "
            f"lease_worker = NULL, lease_expires_at = NULL "
            f"WHERE {lapsed} AND losses + 1 < %(max)s RETURNING {self.returning_live}{self.wake}"
        ), params

    def expired(self, queues: list[str]) -> tuple[str, dict[str, Any]]:
        """READY jobs of ``queues`` past their ``expires`` time (a WHERE condition)."""
        where, params = self.among("queue", "q", queues)
        return (
            f"state IN ({_states(Move.EXPIRE)}) AND expires_at <= {self.now} AND {where}",
            params,
        )

    def update_live(self, keys: tuple[str, ...], where: str) -> str:
        sets = ", ".join(f"{k} = {self._param(k)}" for k in keys)
        return f"UPDATE {JOB} SET {sets} WHERE {where} RETURNING {self.returning_live}"

    def _param(self, column: str) -> str:
        return self.json(column) if column in JSON_COLUMNS else f"%({column})s"


class PostgresDialect(Dialect):
    vendor = "postgresql"
    # statement_timestamp(): the clock at the start of this statement (a stable value, so a
    # condition on it can use an index, unlike clock_timestamp()).
    now = "COALESCE(%(now)s::float8, extract(epoch FROM statement_timestamp())::float8)"
    null_result = "NULL::float8, NULL::float8, NULL::jsonb"
    true = "TRUE"
    wake = f", pg_notify('{NOTIFY_CHANNEL}', 'q' || queue)"

    def json(self, name: str) -> str:
        return f"%({name})s::jsonb"

    def text(self, name: str) -> str:
        return f"%({name})s::text"

    def append(self, column: str, name: str) -> str:
        return f"{column} || jsonb_build_array(%({name})s::text)"

    def append_json(self, column: str, name: str) -> str:
        return f"{column} || jsonb_build_array(%({name})s::jsonb)"

    def among(self, column: str, prefix: str, values: list[str]) -> tuple[str, dict[str, Any]]:
        return f"{column} = ANY(%({prefix})s)", {prefix: list(values)}

    def __init__(self) -> None:
        super().__init__()
        self.notify_cancel = f"SELECT pg_notify('{NOTIFY_CHANNEL}', 'c' || %(job_id)s)"
        self._claims: dict[tuple[bool, int], str] = {}
        self._insert = f"WITH ins AS ({super().insert()}) SELECT ins.*{self.wake} FROM ins"
        self.settle_batch = self._settle_batch()

    def insert(self) -> str:
        return self._insert

    def claim(self, queues: list[str], limit: int = 1) -> tuple[str, dict[str, Any]]:
        many = len(queues) > 1
        statement = self._claims.get((many, limit))
        if statement is None:
            statement = self._claims[many, limit] = self._claim(many, limit)
        return statement, {"q": list(queues) if many else queues[0]}

    def _claim(self, many: bool, limit: int) -> str:
        """Claim up to ``limit`` rows (written into the text: a LIMIT parameter would leave
        the planner guessing once psycopg prepares the statement)."""
        ready = (
            "j.state = 'READY' AND j.queue = {queue} AND j.due_at <= {now} "
            "AND (j.expires_at IS NULL OR j.expires_at > {now}) "
            f"ORDER BY j.priority DESC, j.due_at, j.seq LIMIT {int(limit)} "
            "FOR UPDATE OF j SKIP LOCKED"
        )
        update = (
            f"UPDATE {JOB} j SET state = 'RUNNING', started_at = {self.now}, "
            f"last_attempted_at = {self.now}, "
            "worker_ids = j.worker_ids || jsonb_build_array(%(worker)s::text), "
            "lease_token = %(token)s, lease_worker = %(worker)s::text, "
            f"lease_expires_at = {self.now} + %(lease)s FROM picked "
            f"WHERE j.seq = picked.seq RETURNING {self.live_columns}, j.seq"
        )
        if not many:
            # One queue: the ready index gives the rows in claim order; LIMIT n reads n.
            return (
                f"WITH picked AS (SELECT j.seq FROM {JOB} j WHERE "
                + ready.format(queue="%(q)s", now=self.now)
                + f") {update}"
            )
        # Several: the best rows of each queue (each locked, or skipped if locked), then the
        # best of those.
        return (
            "WITH picked AS (SELECT c.seq FROM unnest(%(q)s::text[]) AS q(name) "
            f"CROSS JOIN LATERAL (SELECT j.seq, j.priority, j.due_at FROM {JOB} j WHERE "
            + ready.format(queue="q.name", now=self.now)
            + f") c ORDER BY c.priority DESC, c.due_at, c.seq LIMIT {int(limit)}) "
            + update
        )

    def _settle_batch(self) -> str:
        """Finish many RUNNING jobs in one statement: the parallel arrays ``ids``, ``tokens``,
        ``states`` and ``values`` / ``errors`` (JSON texts; NULL keeps the row's errors).
        Returns the ids of the jobs settled: a job missing from them had lost its lease."""
        picked = [
            "a.state"
            if column == "state"
            else "COALESCE(a.errors::jsonb, d.errors)"
            if column == "errors"
            else f"d.{column}"
            for column in JOB_COLUMNS
        ]
        updates = ", ".join(f"{c} = excluded.{c}" for c in ROW_COLUMNS if c != "job_id")
        return (
            f"WITH n AS (SELECT {self.now} AS t), a AS (SELECT * FROM unnest(%(ids)s::text[], "
            "%(tokens)s::text[], %(states)s::text[], %(values)s::text[], %(errors)s::text[]) "
            "AS a(job_id, token, state, return_value, errors)), "
            f"d AS (DELETE FROM {JOB} j USING a WHERE j.job_id = a.job_id "
            "AND j.state = 'RUNNING' AND j.lease_token = a.token RETURNING j.*) "
            f"INSERT INTO {RESULT} ({', '.join(ROW_COLUMNS)}) SELECT {', '.join(picked)}, n.t, "
            "n.t + COALESCE((d.options->>'result_ttl')::float8, %(ttl)s), "
            "a.return_value::jsonb FROM d JOIN a ON a.job_id = d.job_id, n "
            f"ON CONFLICT (job_id) DO UPDATE SET {updates} RETURNING job_id"
        )

    def finish(self, keys: tuple[str, ...]) -> str:
        """RUNNING -> a finished state with ``keys`` set, in one statement."""
        picked = [
            "%(state)s"
            if column == "state"
            else self._param(column)
            if column in keys
            else f"d.{column}"
            for column in JOB_COLUMNS
        ]
        value = self.json("return_value") if "return_value" in keys else "NULL::jsonb"
        updates = ", ".join(f"{c} = excluded.{c}" for c in ROW_COLUMNS if c != "job_id")
        return (
            f"WITH n AS (SELECT {self.now} AS t), d AS (DELETE FROM {JOB} j "
            "WHERE j.job_id = %(job_id)s AND j.state = 'RUNNING' "
            "AND j.lease_token = %(token)s RETURNING j.*) "
            f"INSERT INTO {RESULT} ({', '.join(ROW_COLUMNS)}) SELECT {', '.join(picked)}, n.t, "
            "n.t + COALESCE((d.options->>'result_ttl')::float8, %(ttl)s), "
            f"{value} FROM d, n ON CONFLICT (job_id) DO UPDATE SET {updates} "
            f"RETURNING {self.returning_done}"
        )


class SqliteDialect(Dialect):
    vendor = "sqlite"
    now = "COALESCE(%(now)s, (julianday('now') - 2440587.5) * 86400.0)"
    null_result = "NULL, NULL, NULL"
    true = "1"
    false = "0"

    def append(self, column: str, name: str) -> str:
        return f"json_insert({column}, '$[#]', %({name})s)"

    def append_json(self, column: str, name: str) -> str:
        return f"json_insert({column}, '$[#]', json(%({name})s))"

    def among(self, column: str, prefix: str, values: list[str]) -> tuple[str, dict[str, Any]]:
        names = [f"{prefix}{i}" for i in range(len(values))]
        placeholders = ", ".join(f"%({n})s" for n in names) or "NULL"
        return f"{column} IN ({placeholders})", dict(zip(names, values, strict=True))

    def claim(self, queues: list[str], limit: int = 1) -> tuple[str, dict[str, Any]]:
        where, params = self.among("queue", "q", queues)
        return (
            f"UPDATE {JOB} SET state = 'RUNNING', started_at = n.t, last_attempted_at = n.t, "
            f"worker_ids = json_insert(worker_ids, '$[#]', %(worker)s), "
            "lease_token = %(token)s, lease_worker = %(worker)s, "
            f"lease_expires_at = n.t + %(lease)s FROM (SELECT {self.now} AS t) n "
            f"WHERE seq IN (SELECT seq FROM {JOB} WHERE state = 'READY' AND {where} "
            f"AND due_at <= {self.now} AND (expires_at IS NULL OR expires_at > {self.now}) "
            f"ORDER BY priority DESC, due_at, seq LIMIT {int(limit)}) "
            f"RETURNING {self.returning_live}, seq"
        ), params


_DIALECTS: dict[str, Dialect] = {}


def dialect_for(vendor: str) -> Dialect:
    """The statements for a Django connection's ``vendor`` (PostgreSQL or SQLite)."""
    found = _DIALECTS.get(vendor)
    if found is None:
        if vendor == "postgresql":
            found = PostgresDialect()
        elif vendor == "sqlite":
            found = SqliteDialect()
        else:
            raise ValueError(
                f"the database task backend runs on PostgreSQL or SQLite, got {vendor!r}"
            )
        _DIALECTS[vendor] = found
    return found
