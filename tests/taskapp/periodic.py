"""Module-level tasks the schedule tests fire. ``FIRED`` records what ran."""

from __future__ import annotations

import asyncio

from headrace.tasks import task

FIRED: list[tuple[str, object]] = []
#: Set each time ``ping`` runs (tests wait on it instead of sleeping).
PINGED = asyncio.Event()


@task()
def tick(label: str = "tick") -> str:
    FIRED.append(("tick", label))
    return label


@task()
async def ping() -> None:
    FIRED.append(("ping", None))
    PINGED.set()


@task(queue_name="emails")
def report(kind: str, *, to: str) -> str:
    FIRED.append(("report", (kind, to)))
    return kind


def not_a_task() -> None:
    """A plain function: naming it in a schedule is a configuration error."""
