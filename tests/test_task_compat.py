"""Celery's shapes (``headrace.tasks.compat``), and the seed's Celery code run unchanged but for
its import lines (``tests/blogapp``), with mail through Django's locmem backend."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.tasks import task_backends
from django.test import Client
from django.utils import timezone

from headrace.layers import ManualClock
from headrace.tasks import HeadraceTaskError, TaskExpired
from headrace.tasks.compat import AsyncResult, shared_task
from headrace.tasks.worker import TaskWorker
from tests.blogapp.models import Post
from tests.blogapp.tasks import notify_author
from tests.task_backends import memory
from tests.taskapp import celery_tasks

WAIT = 5


@pytest.fixture
def clock(settings: Any) -> ManualClock:
    clock = ManualClock()
    settings.TASKS = memory(clock)
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    celery_tasks.SEEN.clear()
    return clock


@contextlib.contextmanager
def running_worker() -> Iterator[TaskWorker]:
    """A task worker on its own thread and loop, as ``runworker --tasks`` would run it."""
    worker = TaskWorker("default", jitter=lambda cap: cap)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run()), daemon=True)
    thread.start()
    assert worker.wait_started(WAIT)
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(WAIT)


def advance(worker: TaskWorker, clock: ManualClock, seconds: float) -> None:
    """Move the manual clock on the worker's loop (its timers belong to that loop)."""
    loop = worker._loop
    assert loop is not None
    done = threading.Event()

    def move() -> None:
        clock.advance(seconds)
        done.set()

    loop.call_soon_threadsafe(move)
    assert done.wait(WAIT)


# -- the seed ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_seed_publish_view_and_notify_author_task_run_unchanged(
    clock: ManualClock, settings: Any
) -> None:
    settings.ROOT_URLCONF = "tests.blogapp.root_urls"
    author = User.objects.create(username="ada", email="ada@example.com")
    post = Post.objects.create(title="Engines", slug="engines", author=author)
    with running_worker():
        response = Client().post("/blog/engines/publish/")
        assert response.status_code == 302
        assert response["Location"] == "/blog/engines/"
        [job] = [j for j in task_backends["default"]._store.jobs.values()]
        assert AsyncResult(job.id, notify_author.task).get(timeout=WAIT) is None
    post.refresh_from_db()
    assert post.published_at is not None
    [message] = mail.outbox
    assert message.subject == "Your post 'Engines' was published"
    assert message.to == ["ada@example.com"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_notify_author_retries_with_backoff_until_the_post_exists(clock: ManualClock) -> None:
    author = User.objects.create(username="bob", email="bob@example.com")
    with running_worker() as worker:
        result = notify_author.delay(1_000)  # no such post yet: DoesNotExist, retried
        _wait_status(result, "RETRY")
        assert len(result._result().errors) == 1
        advance(worker, clock, 1)  # retry_backoff=True: 1 s, then 2 s, 4 s ... (max 60)
        _wait_errors(result, 2)
        Post.objects.create(pk=1_000, title="Late", slug="late", author=author)
        advance(worker, clock, 2)
        assert result.get(timeout=WAIT) is None
    assert result.status == "SUCCESS"
    assert [m.subject for m in mail.outbox] == ["Your post 'Late' was published"]


def _wait_status(result: AsyncResult, status: str) -> None:
    backend: Any = task_backends["default"]
    for _ in range(200):
        if result.status == status:
            return
        with contextlib.suppress(TimeoutError):
            backend.wait_finished_sync(result.id, 0.01)
    raise AssertionError(f"status stayed {result.status}, expected {status}")


def _wait_errors(result: AsyncResult, count: int) -> None:
    for _ in range(500):
        if len(result._result().errors) >= count and result.status == "RETRY":
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{len(result._result().errors)} errors, expected {count}")


# -- Celery's shapes -----------------------------------------------------------------------------


def test_shared_task_is_still_a_plain_function_when_called(clock: ManualClock) -> None:
    assert celery_tasks.plain_add(2, 3) == 5
    assert celery_tasks.plain_add.name == "tests.taskapp.celery_tasks.plain_add"


def test_delay_and_apply_async_return_results_with_id_status_and_get(clock: ManualClock) -> None:
    with running_worker():
        first = celery_tasks.plain_add.delay(1, 2)
        assert isinstance(first.id, str)
        assert first.get(timeout=WAIT) == 3
        assert first.status == "SUCCESS"
        assert first.successful()
        second = celery_tasks.plain_add.apply_async(args=[2], kwargs={"b": 5}, task_id="my-id-1")
        assert second.id == "my-id-1"
        assert second.get(timeout=WAIT) == 7


def test_apply_async_countdown_eta_and_expires(clock: ManualClock) -> None:
    gone = celery_tasks.plain_add.apply_async((1, 3), expires=10)
    clock.advance(10)  # no worker yet: it expires unrun
    later = celery_tasks.plain_add.apply_async((1, 1), countdown=30)
    at = celery_tasks.plain_add.apply_async(
        (1, 2), eta=timezone.datetime.fromtimestamp(clock.time() + 60, tz=timezone.UTC)
    )
    with running_worker() as worker:
        assert later.status == "PENDING"
        advance(worker, clock, 30)
        assert later.get(timeout=WAIT) == 2
        assert at.status == "PENDING"
        advance(worker, clock, 30)
        assert at.get(timeout=WAIT) == 3
        with pytest.raises(TaskExpired):
            gone.get(timeout=WAIT)
    assert gone.status == "FAILURE"
    assert gone.failed()


def test_bound_tasks_see_request_id_and_retries_and_self_retry(clock: ManualClock) -> None:
    with running_worker() as worker:
        result = celery_tasks.bound_retrying.delay(2)
        _wait_status(result, "RETRY")
        advance(worker, clock, 10)  # default_retry_delay
        _wait_errors(result, 2)
        advance(worker, clock, 10)
        assert result.get(timeout=WAIT) == {"id": result.id, "retries": 2}
    assert [(result.id, 0), (result.id, 1), (result.id, 2)] == celery_tasks.SEEN


def test_get_raises_the_task_error_after_the_last_retry(clock: ManualClock) -> None:
    with running_worker() as worker:
        result = celery_tasks.bound_retrying.apply_async((5,), task_id="doomed")
        for errors in (1, 2):
            _wait_errors(result, errors)
            advance(worker, clock, 10)
        with pytest.raises(LookupError, match="retry 2"):
            result.get(timeout=WAIT)
        assert result.get(timeout=WAIT, propagate=False) is None
    assert result.status == "FAILURE"


def test_an_async_bound_task_runs_in_its_queue(clock: ManualClock) -> None:
    with running_worker():
        result = celery_tasks.bound_async.delay("hi")
        assert result.get(timeout=WAIT) == f"hi from {result.id}"
    assert task_backends["default"].get_result(result.id).task.queue_name == "emails"


def test_revoke_cancels_a_waiting_job(clock: ManualClock) -> None:
    result = celery_tasks.plain_add.delay(1, 1)
    result.revoke()
    assert result.status == "REVOKED"
    with pytest.raises(HeadraceTaskError):
        result.get(timeout=WAIT)


def test_unknown_celery_options_raise_at_decoration(clock: ManualClock) -> None:
    with pytest.raises(TypeError, match="did you mean 'retry_backoff'"):
        shared_task(retry_backof=True)(celery_tasks.plain_add.func)
    with pytest.raises(TypeError, match="rate_limit"):
        shared_task(rate_limit="10/m")(celery_tasks.plain_add.func)


def test_a_stored_celery_style_job_resolves_to_its_task_by_path(clock: ManualClock) -> None:
    backend: Any = task_backends["default"]
    for wrapper in (celery_tasks.plain_add, celery_tasks.bound_retrying):
        assert backend.resolve_task(wrapper.name) is wrapper.task


def test_a_bad_task_id_is_refused(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="a task id must be 1 to 80"):
        celery_tasks.plain_add.apply_async((1, 2), task_id="no spaces/or slashes")


def test_bad_per_call_times_are_refused(clock: ManualClock) -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="countdown must be a non-negative number"):
        celery_tasks.plain_add.apply_async((1, 2), countdown=-1)
    with pytest.raises(ValueError, match="expires must be a non-negative number"):
        celery_tasks.plain_add.apply_async((1, 2), expires="soon")
    with pytest.raises(ValueError, match="eta must be an aware datetime"):
        celery_tasks.plain_add.apply_async((1, 2), eta=datetime(2030, 1, 1))


def test_a_task_id_in_use_returns_that_job(clock: ManualClock) -> None:
    first = celery_tasks.plain_add.apply_async((1, 2), task_id="only-once")
    second = celery_tasks.plain_add.apply_async((3, 4), task_id="only-once")
    assert second.id == first.id
    assert task_backends["default"].get_result("only-once").args == [1, 2]
