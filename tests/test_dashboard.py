"""The dashboard without a browser: the inspector API on the in-memory backend, /metrics
parsed with prometheus_client's own parser, permissions, actions, and the live consumer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission, User
from django.tasks import task_backends
from django.test import AsyncClient, Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from headrace.connections import connection_counts, track_connections
from headrace.dashboard.consumers import CLOSE_FORBIDDEN, DashboardConsumer, query_from
from headrace.dashboard.inspect import JobQuery, TaskInspector, inspector_for
from headrace.dashboard.memory import MemoryInspector
from headrace.layers import ManualClock
from headrace.tasks.states import JobState
from headrace.tasks.worker import TaskWorker, task_workers
from headrace.testing import WebsocketCommunicator
from tests.dashboardapp import tasks

WAIT = 10.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000_000.0)


@pytest.fixture
def fresh_tasks(clock: ManualClock) -> Iterator[None]:
    """A new in-memory store (and so new counters) on a manual clock."""
    config = {
        "default": {
            "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"clock": clock},
        }
    }
    with override_settings(TASKS=config, ROOT_URLCONF="tests.dashboardapp.urls"):
        yield


@pytest.fixture
def inspector(fresh_tasks: None) -> TaskInspector:
    return inspector_for(task_backends["default"])


@pytest.fixture
async def workers(fresh_tasks: None) -> AsyncIterator[list[TaskWorker]]:
    """Start workers with ``start()``; each is stopped (now) at the end."""
    made: list[tuple[TaskWorker, asyncio.Future[None]]] = []
    yield made  # type: ignore[misc]
    for worker, run in made:
        worker.stop(now=True)
        await asyncio.wait_for(run, WAIT)


def start(made: Any) -> tuple[TaskWorker, asyncio.Future[None]]:
    worker = TaskWorker("default", ["default"], jitter=lambda cap: cap)
    run = asyncio.ensure_future(worker.run())
    made.append((worker, run))
    return worker, run


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


# -- the inspector ----------------------------------------------------------------------------


def test_the_memory_backend_has_the_memory_inspector(inspector: TaskInspector) -> None:
    assert isinstance(inspector, MemoryInspector)
    assert isinstance(inspector, TaskInspector)


def test_a_backend_without_an_inspector_is_refused_by_name() -> None:
    from headrace.exceptions import ConfigurationError

    class Other:
        alias = "elsewhere"

    with pytest.raises(ConfigurationError, match=r"TASKS\['elsewhere'\].*no inspector"):
        inspector_for(Other())


def test_queues_count_ready_delayed_and_the_oldest_wait(
    inspector: TaskInspector, clock: ManualClock
) -> None:
    tasks.add.enqueue(1, 2)
    clock.advance(5)
    tasks.add.enqueue(3, 4)
    tasks.add.using(queue_name="emails").enqueue(0, 0)
    task_backends["default"].enqueue_job(tasks.add, [1, 1], {}, countdown=60)
    clock.advance(2)
    by_name = {q.name: q for q in inspector.queues()}
    assert (by_name["default"].ready, by_name["default"].delayed) == (2, 1)
    assert by_name["default"].running == by_name["default"].dead == 0
    assert by_name["default"].oldest_ready_age == pytest.approx(7.0)
    assert (by_name["emails"].ready, by_name["emails"].oldest_ready_age) == (1, 2.0)


def test_jobs_are_listed_newest_first_and_filtered(
    inspector: TaskInspector, clock: ManualClock
) -> None:
    first = tasks.add.enqueue(1, 2)
    clock.advance(1)
    second = tasks.explode.enqueue("x")
    clock.advance(1)
    tasks.add.enqueue(5, 5).cancel()
    page = inspector.jobs(JobQuery())
    assert page.total == 3
    assert [job.task_path for job in page.jobs][:2] == [
        "tests.dashboardapp.tasks.add",
        "tests.dashboardapp.tasks.explode",
    ]
    assert [j.id for j in inspector.jobs(JobQuery(task="EXPLODE")).jobs] == [second.id]
    ready = inspector.jobs(JobQuery(state=JobState.READY))
    assert {j.id for j in ready.jobs} == {first.id, second.id}
    assert inspector.jobs(JobQuery(state=JobState.CANCELLED)).total == 1
    assert [j.id for j in inspector.jobs(JobQuery(search=first.id[:10])).jobs] == [first.id]
    assert len(inspector.jobs(JobQuery(limit=1)).jobs) == 1


def test_retry_and_purge_refuse_a_live_job_and_work_on_a_finished_one(
    inspector: TaskInspector,
) -> None:
    result = tasks.add.using(priority=7).enqueue(2, 2)
    with pytest.raises(ValueError, match="expected a finished job, got READY"):
        inspector.retry(result.id)
    with pytest.raises(ValueError, match="cancel it first"):
        inspector.purge(result.id)
    assert inspector.cancel(result.id) is True
    again = inspector.retry(result.id)
    job = inspector.job(again)
    assert job is not None
    assert job.id != result.id
    assert (list(job.args), job.priority, job.state) == ([2, 2], 7, JobState.READY)
    assert inspector.purge(result.id) is True
    assert inspector.job(result.id) is None
    assert inspector.purge(result.id) is False
    with pytest.raises(LookupError, match="no job"):
        inspector.retry(result.id)


def test_the_list_filters_from_the_browser_are_checked() -> None:
    assert query_from({"state": "failed", "task": " add "}).state is JobState.FAILED
    assert query_from({"state": "failed", "task": " add "}).task == "add"
    with pytest.raises(ValueError, match="state must be one of READY"):
        query_from({"state": "sleeping"})
    with pytest.raises(ValueError, match="task must be a string"):
        query_from({"task": ["x"]})


# -- counters and /metrics --------------------------------------------------------------------


@pytest.mark.django_db
async def test_metrics_count_what_the_test_did_also_after_a_worker_restart(
    workers: list[Any],
) -> None:
    tasks.HANGING.clear()
    worker, run = start(workers)
    done = [tasks.add.enqueue(i, i) for i in range(3)]
    done.append(tasks.explode.enqueue("metrics"))
    done.append(tasks.retried_once.enqueue("k"))
    for result in done:
        await result.wait(timeout=WAIT)
    tasks.hang.enqueue()
    await asyncio.to_thread(tasks.HANGING.wait, WAIT)
    assert worker in task_workers()

    # The worker restarts (the process does not): the in-memory store keeps its counters,
    # and the job it had in hand is handed back and started again (a redelivery).
    worker.stop(now=True)
    await asyncio.wait_for(run, WAIT)
    tasks.HANGING.clear()
    start(workers)
    await asyncio.to_thread(tasks.HANGING.wait, WAIT)
    for result in [tasks.add.enqueue(10, 10), tasks.add.enqueue(20, 20)]:
        await result.wait(timeout=WAIT)
    tasks.add.using(queue_name="emails").enqueue(0, 0)  # no worker reads "emails"
    task_backends["default"].enqueue_job(tasks.add, [1, 1], {}, countdown=3600)

    response = await AsyncClient().get("/metrics")
    assert response.status_code == 200
    found = samples(response.content.decode())
    add, explode, retried, hang = (
        f"tests.dashboardapp.tasks.{name}" for name in ("add", "explode", "retried_once", "hang")
    )

    def count(name: str, task: str, queue: str = "default") -> float:
        return value(found, f"headrace_task_{name}_total", task=task, queue=queue)

    assert count("enqueued", add) == 6
    assert count("enqueued", add, "emails") == 1
    assert count("started", add) == 5
    assert count("succeeded", add) == 5
    assert count("failed", explode) == 1
    assert (count("started", retried), count("retried", retried)) == (2, 1)
    assert count("failed", retried) == 1
    assert (count("started", hang), count("redelivered", hang)) == (2, 1)
    assert count("cancelled", add) == count("dead", add) == 0
    assert value(found, "headrace_queue_length", queue="default", state="running") == 1
    assert value(found, "headrace_queue_length", queue="default", state="delayed") == 1
    assert value(found, "headrace_queue_length", queue="emails", state="ready") == 1
    assert value(found, "headrace_task_runtime_seconds_count", task=add, queue="default") == 5
    assert value(found, "headrace_task_queue_wait_seconds_count", task=hang, queue="default") == 2
    ups = [v for (name, _), v in found.items() if name == "headrace_worker_up"]
    assert sorted(ups) == [0.0, 1.0]  # the stopped worker is down, the new one up
    assert ("headrace_websocket_connections", frozenset()) in found
    assert value(found, "headrace_channel_layer_sent", layer="default") >= 0


@pytest.mark.django_db
def test_metrics_ask_for_the_token_when_one_is_set(fresh_tasks: None) -> None:
    with override_settings(HEADRACE_METRICS_TOKEN="s3cret"):
        assert Client().get("/metrics").status_code == 401
        response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
        assert response.status_code == 200
        assert b"# TYPE headrace_task_enqueued_total counter" in response.content


# -- pages and actions ------------------------------------------------------------------------


def _user(**fields: Any) -> User:
    return User.objects.create_user(username=fields.pop("username", "u"), password="pw", **fields)


@pytest.mark.django_db
def test_the_pages_are_for_staff_only(fresh_tasks: None) -> None:
    result = tasks.add.enqueue(1, 1)
    anonymous = Client()
    assert anonymous.get("/headrace/").status_code == 302
    member = Client()
    member.force_login(_user(username="member"))
    assert member.get("/headrace/").status_code == 403
    assert member.get(f"/headrace/jobs/{result.id}/").status_code == 403
    assert member.post(f"/headrace/jobs/{result.id}/cancel/").status_code == 403
    staff = Client()
    staff.force_login(_user(username="staff", is_staff=True))
    assert staff.get("/headrace/").status_code == 200
    page = staff.get(f"/headrace/jobs/{result.id}/")
    assert page.status_code == 200
    assert b"tests.dashboardapp.tasks.add" in page.content
    assert staff.get("/headrace/jobs/nope/").status_code == 404


@pytest.mark.django_db
def test_a_custom_permission_narrows_the_staff(fresh_tasks: None) -> None:
    staff = _user(username="staff", is_staff=True)
    client = Client()
    client.force_login(staff)
    with override_settings(HEADRACE_DASHBOARD_PERMISSION="auth.view_user"):
        assert client.get("/headrace/").status_code == 403
        staff.user_permissions.add(Permission.objects.get(codename="view_user"))
        client.force_login(User.objects.get(pk=staff.pk))
        assert client.get("/headrace/").status_code == 200


@pytest.mark.django_db
def test_actions_are_post_only_and_csrf_protected(fresh_tasks: None) -> None:
    result = tasks.add.enqueue(1, 1)
    staff = _user(username="staff", is_staff=True)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)
    assert strict.get(f"/headrace/jobs/{result.id}/cancel/").status_code == 405
    assert strict.post(f"/headrace/jobs/{result.id}/cancel/").status_code == 403
    page = strict.get(f"/headrace/jobs/{result.id}/")
    token = page.cookies["csrftoken"].value
    response = strict.post(f"/headrace/jobs/{result.id}/cancel/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert task_backends["default"].get_job(result.id).state is JobState.CANCELLED
    # A finished job: retry redirects to the new job; purge forgets it; live: 409.
    response = strict.post(f"/headrace/jobs/{result.id}/retry/", {"csrfmiddlewaretoken": token})
    new_id = response["Location"].rstrip("/").split("/")[-1]
    assert new_id != result.id
    assert task_backends["default"].get_job(new_id) is not None
    response = strict.post(f"/headrace/jobs/{new_id}/purge/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 409
    assert b"cancel it first" in response.content
    response = strict.post(f"/headrace/jobs/{result.id}/purge/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert task_backends["default"].get_job(result.id) is None


# -- the live consumer ------------------------------------------------------------------------


def _communicator(user: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(DashboardConsumer.as_asgi(), "/headrace/ws/")
    communicator.scope["user"] = user
    return communicator


@pytest.mark.django_db(transaction=True)
async def test_the_socket_refuses_non_staff_with_4403(fresh_tasks: None) -> None:
    member = await sync_to_async(_user)(username="member")
    communicator = _communicator(member)
    connected, _ = await communicator.connect()
    assert connected
    closed = await communicator.receive_output(WAIT)
    assert (closed["type"], closed["code"]) == ("websocket.close", CLOSE_FORBIDDEN)


@pytest.mark.django_db(transaction=True)
async def test_the_socket_sends_updates_with_the_queried_jobs(fresh_tasks: None) -> None:
    staff = await sync_to_async(_user)(username="staff", is_staff=True)
    kept = tasks.add.enqueue(1, 2)
    tasks.explode.enqueue("not listed")
    communicator = _communicator(staff)
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "query", "task": "add"})
    await communicator.send_json_to({"type": "watch", "id": kept.id})
    while True:  # updates until one reflects both messages
        update = await communicator.receive_json_from(WAIT)
        assert update["type"] == "update"
        if update["jobs"]["total"] == 1 and update["job"] is not None:
            break
    assert [row["id"] for row in update["jobs"]["rows"]] == [kept.id]
    assert update["job"]["args"] == [1, 2]
    assert update["job"]["state"] == "READY"
    assert {q["name"]: q["ready"] for q in update["queues"]} == {"default": 2, "emails": 0}
    assert update["totals"]["enqueued"] == 2
    await communicator.send_json_to({"type": "query", "state": "asleep"})
    error = await communicator.receive_json_from(WAIT)
    while error["type"] == "update":
        error = await communicator.receive_json_from(WAIT)
    assert error == {"type": "error", "error": error["error"]}
    assert "state must be one of" in error["error"]
    await communicator.disconnect()


# -- connections ----------------------------------------------------------------------------


async def test_open_websockets_and_sse_streams_are_counted() -> None:
    release = asyncio.Event()
    inside = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
        else:
            headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        inside.set()
        await release.wait()

    async def sent(message: Any) -> None:
        pass

    async def nothing() -> Any:
        return {}

    tracked = track_connections(app)
    before = connection_counts()
    for kind in ("websocket", "http"):
        inside.clear()
        release.clear()
        run = asyncio.ensure_future(tracked({"type": kind}, nothing, sent))
        await asyncio.wait_for(inside.wait(), WAIT)
        now = connection_counts()
        if kind == "websocket":
            assert now.websockets == before.websockets + 1
        else:
            assert now.sse == before.sse + 1
        release.set()
        await asyncio.wait_for(run, WAIT)
    assert connection_counts() == before


# -- the feed ---------------------------------------------------------------------------------


def test_the_feed_waits_longer_when_watching_costs_more_than_its_share() -> None:
    from headrace.dashboard.feed import DUTY, Feed

    feed = Feed(interval=0.5)
    assert feed.pause() == 0.5
    feed.charge(0.001)  # cheap: the interval holds
    assert feed.pause() == 0.5
    feed.charge(0.06)
    feed.charge(0.06)  # a sample and an update of 60 ms each
    assert feed.pause() == pytest.approx(0.12 / DUTY - 0.12)
    assert feed.pause() == 0.5  # the charge is spent once
    assert feed.cpu == pytest.approx(0.121)
    with pytest.raises(ValueError, match="HEADRACE_DASHBOARD_INTERVAL must be positive"):
        Feed(interval=0)


def test_the_throughput_history_gives_rates_between_points() -> None:
    from headrace.dashboard.feed import Feed

    feed = Feed(interval=0.5)
    feed._record(100.0, {"succeeded": 0, "failed": 0})
    feed._record(100.5, {"succeeded": 5, "failed": 0})  # within a step: not a point
    feed._record(101.0, {"succeeded": 10, "failed": 2})
    rates = feed.throughput(103.0, {"succeeded": 30, "failed": 2})
    assert rates == [[101.0, 10.0, 2.0], [103.0, 10.0, 0.0]]


# -- the real-time side -----------------------------------------------------------------------


async def test_realtime_sums_layer_statistics_and_samples_group_sizes() -> None:
    from headrace.dashboard.realtime import realtime
    from headrace.layers import get_channel_layer

    layer = get_channel_layer()
    assert layer is not None
    await layer.flush()
    before = realtime().layers["default"].sent
    for n in range(3):
        await layer.group_add("dashboard-room", f"reader-{n}")
    await layer.group_add("dashboard-pair", "reader-0")
    await layer.group_send("dashboard-room", {"type": "hello"})
    sample = realtime(groups=2)
    assert sample.layers["default"].sent == before + 3
    assert [(g.group, g.members) for g in sample.groups] == [
        ("dashboard-room", 3),
        ("dashboard-pair", 1),
    ]
    assert sample.as_json()["groups"][0] == {
        "layer": "default",
        "group": "dashboard-room",
        "members": 3,
    }
    await layer.flush()


@pytest.mark.slow
@pytest.mark.django_db
def test_metrics_merge_what_other_processes_recorded_in_the_multiprocess_dir(
    fresh_tasks: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    # Another process of the application counts with prometheus_client's own objects.
    script = "from prometheus_client import Counter; Counter('myapp_hits', 'Hits').inc(3)"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    tasks.add.enqueue(1, 1)
    found = samples(Client().get("/metrics").content.decode())
    assert value(found, "myapp_hits_total") == 3
    assert (
        value(
            found,
            "headrace_task_enqueued_total",
            task="tests.dashboardapp.tasks.add",
            queue="default",
        )
        == 1
    )
