"""``manage.py tasks stats|list|dead|retry|cancel|purge`` on the Redis backend (real server)."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.tasks import task_backends

from headrace.layers import ManualClock
from headrace.tasks import JobState
from headrace.tasks.backends.redis import RedisTaskBackend
from tests.redis_servers import servers
from tests.taskapp import tasks


@pytest.fixture
def backend(settings: Any, request: pytest.FixtureRequest, clock: ManualClock) -> RedisTaskBackend:
    server = servers(request.config).standalone()
    settings.TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.redis.RedisTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {
                "hosts": [server.url],
                "prefix": f"t-{uuid.uuid4().hex[:12]}",
                "clock": clock,
                "lease": 10,
                "max_deliveries": 1,
            },
        }
    }
    found = task_backends["default"]
    assert isinstance(found, RedisTaskBackend)
    return found


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("tasks", *args, stdout=out)
    return out.getvalue()


def make_dead_letter(backend: RedisTaskBackend, clock: ManualClock) -> str:
    """A job whose (only) worker died: claimed, its lease left to lapse, then reaped."""
    tasks.in_emails.enqueue()
    claimed = backend.claim_nowait(["emails"], "doomed-worker")  # the oldest job of the queue
    assert claimed is not None
    clock.advance(11)
    backend.claim_nowait(["emails"], "next-worker")  # reaps the lapsed lease: dead-lettered
    assert claimed.id in backend.job_ids("emails", "dead")
    return claimed.id


def test_stats_list_and_dead_show_the_queues(backend: RedisTaskBackend, clock: ManualClock) -> None:
    ready = tasks.record.enqueue("now").id
    delayed = tasks.record.using(countdown=60).enqueue("later").id
    dead = make_dead_letter(backend, clock)
    stats = run("stats")
    lines = stats.splitlines()
    assert lines[0].split()[:6] == ["queue", "ready", "delayed", "running", "dead", "finished"]
    default = next(line.split() for line in lines if line.startswith("default"))
    emails = next(line.split() for line in lines if line.startswith("emails"))
    assert default[1:6] == ["1", "1", "0", "0", "0"]
    assert emails[1:6] == ["0", "0", "0", "1", "0"]
    assert ready in run("list", "--state", "ready")
    assert delayed not in run("list", "--state", "ready")
    assert delayed in run("list", "--state", "delayed")
    everything = run("list")
    assert ready in everything
    assert delayed in everything
    assert dead in everything
    dead_table = run("dead")
    assert dead in dead_table
    assert "WorkerLost: worker doomed-worker stopped renewing" in dead_table


def test_retry_enqueues_a_dead_letter_again_as_a_new_job(
    backend: RedisTaskBackend, clock: ManualClock
) -> None:
    dead = make_dead_letter(backend, clock)
    out = run("retry", dead)
    new = out.split()[-1]
    assert out == f"dead letter {dead} enqueued again as {new}\n"
    job = backend.get_job(new)
    assert job is not None
    assert job.state is JobState.READY
    assert job.task_path == "tests.taskapp.tasks.in_emails"
    assert backend.job_ids("emails", "dead") == []
    with pytest.raises(CommandError, match="not a dead letter"):
        run("retry", new)
    second = make_dead_letter(backend, clock)
    out = run("retry", "--all-dead")
    assert out.startswith(f"dead letter {second} enqueued again as ")
    assert backend.job_ids("emails", "dead") == []


def test_cancel_cancels_a_waiting_job(backend: RedisTaskBackend) -> None:
    job_id = tasks.record.enqueue("x").id
    assert run("cancel", job_id) == f"task {job_id} cancelled\n"
    assert run("cancel", job_id) == f"task {job_id} is CANCELLED: nothing to cancel\n"
    with pytest.raises(CommandError, match="no task 'nope'"):
        run("cancel", "nope")


def test_purge_asks_first_unless_yes(
    backend: RedisTaskBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        tasks.record.enqueue(str(n))
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert run("purge", "default") == "nothing deleted\n"
    assert len(backend.job_ids("default", "ready")) == 3
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert run("purge", "default") == "deleted 3 job(s) of queue 'default'\n"
    tasks.record.enqueue("again")
    assert run("purge", "default", "--yes") == "deleted 1 job(s) of queue 'default'\n"
    assert backend.queue_statistics("default").ready == 0
    with pytest.raises(CommandError, match="no queue 'nope'"):
        run("purge", "nope", "--yes")


def test_a_backend_without_shared_queues_is_refused_clearly(settings: Any) -> None:
    settings.TASKS = {
        "default": {
            "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
            "QUEUES": ["default"],
        }
    }
    with pytest.raises(CommandError, match="work with the Redis backend"):
        run("stats")
