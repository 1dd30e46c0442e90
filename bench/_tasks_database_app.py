"""The no-op tasks bench/tasks_database.py runs: headrace's and procrastinate's."""

from __future__ import annotations

import os

import procrastinate

from headrace.tasks import task


@task
async def noop() -> None:
    return None


app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        kwargs={
            "host": os.environ.get("BENCH_PG_HOST", ""),
            "port": int(os.environ.get("BENCH_PG_PORT", "5432")),
            "user": "headrace",
            "dbname": os.environ.get("BENCH_PROCRASTINATE_DB", "bench_procrastinate"),
        }
    )
)


@app.task(name="noop")
async def procrastinate_noop() -> None:
    return None
