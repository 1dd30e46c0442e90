"""Rows of the job tables as dicts, and as :class:`~headrace.tasks.jobs.Job` values.

JSON columns travel as JSON text both ways (Django's PostgreSQL adapters load ``jsonb`` as
text, SQLite stores text), so decoding is the same on both vendors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from headrace.tasks.backends.database import sql
from headrace.tasks.jobs import Job, JobError
from headrace.tasks.states import JobState

__all__ = [
    "CHANGE_COLUMNS",
    "change_value",
    "claim_order",
    "column_value",
    "dumps",
    "error",
    "job",
    "row",
]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_error_dict)


def _error_dict(value: Any) -> dict[str, str]:
    if isinstance(value, JobError):
        return {"exception_class_path": value.exception_class_path, "traceback": value.traceback}
    raise TypeError(f"{type(value).__name__} is not JSON")


def error(cls: type[BaseException], message: str) -> dict[str, str]:
    path = f"{cls.__module__}.{cls.__qualname__}"
    return {"exception_class_path": path, "traceback": f"{path}: {message}\n"}


def row(values: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(sql.ROW_COLUMNS, values, strict=False))
    for column in sql.JSON_COLUMNS:
        value = row[column]
        if value.__class__ is str:
            # Most rows hold empty lists and dicts (no args, no errors yet): no need to parse.
            row[column] = [] if value == "[]" else {} if value == "{}" else json.loads(value)
        elif isinstance(value, str | bytes):
            row[column] = json.loads(value)
    return row


def job(row: Mapping[str, Any], alias: str) -> Job:
    return Job(
        id=row["job_id"],
        task_path=row["task_path"],
        args=row["args"],
        kwargs=row["kwargs"],
        queue=row["queue"],
        priority=row["priority"],
        backend=alias,
        state=JobState(row["state"]),
        enqueued_at=row["enqueued_at"],
        due_at=row["due_at"],
        expires_at=row["expires_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        last_attempted_at=row["last_attempted_at"],
        worker_ids=tuple(row["worker_ids"] or ()),
        errors=tuple(JobError(**error) for error in row["errors"] or ()),
        return_value=row["return_value"],
        retries=row["retries"],
        key=row["idempotency_key"],
        owner=row["owner"],
        progress=row["progress"],
        cancel_requested=bool(row["cancel_requested"]),
        result_expires_at=row["result_expires_at"],
        options=row["options"] or {},
    )


def column_value(column: str, value: Any) -> Any:
    if column in sql.JSON_COLUMNS:
        if value is None and column in ("progress", "return_value"):
            return None
        return dumps(list(value) if isinstance(value, tuple) else value)
    return value


CHANGE_COLUMNS: Final = {
    "return_value": "return_value",
    "errors": "errors",
    "retries": "retries",
    "progress": "progress",
    "cancel_requested": "cancel_requested",
}


def change_value(name: str, value: Any) -> Any:
    if name == "errors":
        return dumps(list(value))
    if name in ("return_value", "progress"):
        return None if value is None else dumps(value)
    return value


_PRIORITY: Final = sql.ROW_COLUMNS.index("priority")
_DUE: Final = sql.ROW_COLUMNS.index("due_at")


def claim_order(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The sort key of a claimed row (read with its ``seq`` last): the order of the claim."""
    return (-values[_PRIORITY], values[_DUE], values[-1])
