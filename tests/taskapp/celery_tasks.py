"""Celery-shaped tasks for tests/test_task_compat.py."""

from __future__ import annotations

from typing import Any

from headrace.tasks.compat import shared_task

SEEN: list[Any] = []


@shared_task
def plain_add(a: int, b: int) -> int:
    return a + b


@shared_task(bind=True, max_retries=2, default_retry_delay=10)
def bound_retrying(self: Any, fail_times: int) -> dict[str, Any]:
    SEEN.append((self.request.id, self.request.retries))
    if self.request.retries < fail_times:
        raise self.retry(exc=LookupError(f"retry {self.request.retries}"))
    return {"id": self.request.id, "retries": self.request.retries}


@shared_task(bind=True, queue="emails", ignore_result=True, acks_late=True)
async def bound_async(self: Any, word: str) -> str:
    return f"{word} from {self.request.id}"
