"""One job's progress to the browser: TaskProgressConsumer (WebSocket) and the SSE endpoint.

The jobs run for real: the in-memory task backend with a :class:`TaskWorker` on the test's
loop, and the task waits for the test before each step (``STEPS``), so the order of what a
subscriber sees is decided by the test, never by timing. Progress is not throttled here
(``progress_rate``), so each step reaches the group.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.tasks import TaskResultStatus
from django.tasks.base import TaskError
from django.test import Client, override_settings
from django.urls import path
from websockets.exceptions import ConnectionClosed

from headrace.auth import AuthMiddlewareStack
from headrace.layers import get_channel_layer
from headrace.routing import URLRouter
from headrace.tasks import JobState, TaskContext, TaskResult, enqueued_by, task
from headrace.tasks.consumers import (
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    TaskProgressConsumer,
    TaskProgressSseConsumer,
    client_message,
    state_messages,
)
from headrace.tasks.worker import TaskWorker
from headrace.testing import ApplicationCommunicator, LiveServer, WebsocketCommunicator
from tests.conftest_consumers import recv_json, ws_connect

TASKS = {
    "default": {
        "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
        "OPTIONS": {"progress_rate": 1_000_000},
    }
}

#: The test puts one item here per step the running ``stepped`` job may take.
STEPS: asyncio.Queue[None]


@task(takes_context=True)
async def stepped(context: TaskContext, steps: int) -> str:
    for done in range(1, steps + 1):
        await STEPS.get()
        context.progress(done, steps, stage="counting")
    return f"counted to {steps}"


@task()
async def broken() -> None:
    await STEPS.get()
    raise ValueError("the data was bad")


ANN = User(pk=7, username="ann")
BOB = User(pk=8, username="bob")
STAFF = User(pk=9, username="root", is_staff=True)

application = URLRouter(
    [
        path("ws/tasks/<str:task_id>/", TaskProgressConsumer.as_asgi()),
        path("tasks/<str:task_id>/events/", TaskProgressSseConsumer.as_asgi()),
    ]
)


@pytest.fixture(autouse=True)
def tasks_backend() -> Iterator[None]:
    with override_settings(TASKS=TASKS):
        yield


@pytest.fixture
async def worker(tasks_backend: None) -> AsyncIterator[TaskWorker]:
    global STEPS
    STEPS = asyncio.Queue()
    await get_channel_layer().flush()
    running = TaskWorker("default")
    run = asyncio.ensure_future(running.run())
    yield running
    running.stop(now=True)
    await asyncio.wait_for(run, 5)


async def enqueue_as(user: Any, task_: Any = stepped, *args: Any) -> TaskResult:
    with enqueued_by(user):
        result: TaskResult = await task_.aenqueue(*args)
    return result


async def step(result: TaskResult, n: int = 1) -> None:
    """Let ``result``'s job (the only one running) take ``n`` more steps."""
    for _ in range(n):
        STEPS.put_nowait(None)


def ws(task_id: str, user: Any) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, f"/ws/tasks/{task_id}/")
    comm.scope["user"] = user
    return comm


# -- what a subscriber is told first (pure) ----------------------------------------------------


def _result(status: TaskResultStatus, **extra: Any) -> TaskResult:
    values: dict[str, Any] = {
        "task": stepped,
        "id": "job1",
        "status": status,
        "enqueued_at": None,
        "started_at": None,
        "finished_at": None,
        "last_attempted_at": None,
        "args": [],
        "kwargs": {},
        "backend": "default",
        "errors": [],
        "worker_ids": [],
    }
    values.update(extra)
    return TaskResult(**values)


def test_state_of_a_job_that_has_not_reported_yet() -> None:
    assert state_messages(_result(TaskResultStatus.READY), None) == [
        {
            "type": "task.state",
            "id": "job1",
            "status": "READY",
            "done": None,
            "total": None,
            "info": None,
        }
    ]


def test_state_of_a_running_job_carries_its_last_progress() -> None:
    progress = {"done": 3, "total": 10, "info": {"stage": "x"}}
    result = _result(TaskResultStatus.RUNNING, state=JobState.RUNNING, progress=progress)
    assert state_messages(result, progress) == [
        {"type": "task.state", "id": "job1", "status": "RUNNING", **progress}
    ]


def test_state_of_an_ended_job_is_followed_by_its_ending() -> None:
    done = _result(TaskResultStatus.SUCCESSFUL, state=JobState.SUCCESSFUL)
    object.__setattr__(done, "_return_value", {"rows": 5})
    assert state_messages(done, None)[1] == {
        "type": "task.finished",
        "id": "job1",
        "return_value": {"rows": 5},
    }
    error = TaskError(exception_class_path="builtins.ValueError", traceback="Traceback: ...")
    failed = _result(TaskResultStatus.FAILED, state=JobState.FAILED, errors=[error])
    assert state_messages(failed, None)[1] == {
        "type": "task.failed",
        "id": "job1",
        "error": {"exception_class": "builtins.ValueError"},
    }
    assert state_messages(failed, None, include_traceback=True)[1]["error"] == {
        "exception_class": "builtins.ValueError",
        "traceback": "Traceback: ...",
    }
    cancelled = _result(
        TaskResultStatus.FAILED,
        state=JobState.CANCELLED,
        errors=[
            TaskError(exception_class_path="headrace.tasks.exceptions.TaskCancelled", traceback="")
        ],
    )
    messages = state_messages(cancelled, None)
    assert messages[0]["status"] == "FAILED"
    assert messages[1]["type"] == "task.cancelled"


def test_a_failure_reaches_the_browser_without_its_traceback_unless_asked() -> None:
    message = {
        "type": "task.failed",
        "id": "j",
        "error": {"exception_class": "E", "traceback": "T"},
    }
    assert client_message(message) == {
        "type": "task.failed",
        "id": "j",
        "error": {"exception_class": "E"},
    }
    assert client_message(message, include_traceback=True) == message
    progress = {"type": "task.progress", "id": "j", "done": 1, "total": 2, "info": {}}
    assert client_message(progress) == progress


# -- the WebSocket consumer ---------------------------------------------------------------------


async def test_websocket_sends_state_then_progress_then_the_end_and_closes(
    worker: TaskWorker,
) -> None:
    result = await enqueue_as(ANN, stepped, 2)
    comm = ws(result.id, ANN)
    assert (await comm.connect())[0]
    state = await comm.receive_json_from()
    assert state["type"] == "task.state"
    assert state["id"] == result.id
    assert state["status"] in ("READY", "RUNNING")
    assert state["done"] is None
    await step(result)
    assert await comm.receive_json_from() == {
        "type": "task.progress",
        "id": result.id,
        "done": 1,
        "total": 2,
        "info": {"stage": "counting"},
    }
    await step(result)
    assert (await comm.receive_json_from())["done"] == 2
    assert await comm.receive_json_from() == {
        "type": "task.finished",
        "id": result.id,
        "return_value": "counted to 2",
    }
    assert await comm.receive_close() == (1000, "")
    await comm.disconnect()
    assert get_channel_layer().statistics().groups == 0


async def test_a_late_subscriber_starts_from_where_the_job_is(worker: TaskWorker) -> None:
    result = await enqueue_as(ANN, stepped, 3)
    early = ws(result.id, ANN)
    await early.connect()
    await early.receive_json_from()
    await step(result, 2)
    assert (await early.receive_json_from())["done"] == 1
    assert (await early.receive_json_from())["done"] == 2

    late = ws(result.id, ANN)
    assert (await late.connect())[0]
    assert await late.receive_json_from() == {
        "type": "task.state",
        "id": result.id,
        "status": "RUNNING",
        "done": 2,
        "total": 3,
        "info": {"stage": "counting"},
    }
    await step(result)
    for comm in (early, late):
        assert (await comm.receive_json_from())["done"] == 3
        assert (await comm.receive_json_from())["type"] == "task.finished"
        assert (await comm.receive_close())[0] == 1000
        await comm.disconnect()


async def test_a_subscriber_after_the_end_gets_the_state_and_the_ending(
    worker: TaskWorker,
) -> None:
    result = await enqueue_as(ANN, broken)
    await step(result)
    await result.wait(timeout=5)
    comm = ws(result.id, ANN)
    assert (await comm.connect())[0]
    state = await comm.receive_json_from()
    assert (state["type"], state["status"]) == ("task.state", "FAILED")
    assert await comm.receive_json_from() == {
        "type": "task.failed",
        "id": result.id,
        "error": {"exception_class": "builtins.ValueError"},
    }
    assert (await comm.receive_close())[0] == 1000
    await comm.disconnect()


async def test_a_failure_and_a_cancel_end_the_stream_live(worker: TaskWorker) -> None:
    failing = await enqueue_as(ANN, broken)
    comm = ws(failing.id, ANN)
    await comm.connect()
    await comm.receive_json_from()
    await step(failing)
    failed = await comm.receive_json_from()
    assert failed["type"] == "task.failed"
    assert failed["error"] == {"exception_class": "builtins.ValueError"}  # no traceback
    assert (await comm.receive_close())[0] == 1000
    await comm.disconnect()

    running = await enqueue_as(ANN, stepped, 5)
    comm = ws(running.id, ANN)
    await comm.connect()
    await comm.receive_json_from()
    await step(running)
    assert (await comm.receive_json_from())["done"] == 1
    assert await running.acancel()
    cancelled = await comm.receive_json_from()
    assert cancelled["type"] == "task.cancelled"
    assert cancelled["error"]["exception_class"] == "headrace.tasks.exceptions.TaskCancelled"
    assert (await comm.receive_close())[0] == 1000
    await comm.disconnect()


async def test_only_the_owner_or_staff_may_watch(worker: TaskWorker) -> None:
    result = await enqueue_as(ANN, stepped, 1)
    for user in (BOB, AnonymousUser(), None):
        comm = ws(result.id, user)
        assert (await comm.connect())[0]  # accepted, so that the browser sees the code
        assert await comm.receive_close() == (CLOSE_FORBIDDEN, "")
        await comm.disconnect()
    comm = ws(result.id, STAFF)
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from())["type"] == "task.state"
    await comm.disconnect()

    # A job enqueued outside enqueued_by() has no owner: staff only.
    orphan = await stepped.aenqueue(1)
    comm = ws(orphan.id, ANN)
    await comm.connect()
    assert (await comm.receive_close())[0] == CLOSE_FORBIDDEN
    await comm.disconnect()
    assert get_channel_layer().statistics().groups == 0


async def test_unknown_and_malformed_ids_close_with_4404(worker: TaskWorker) -> None:
    for task_id in ("0" * 32, "a" * 81, "bad:id"):
        comm = ws(task_id, STAFF)
        assert (await comm.connect())[0]
        assert await comm.receive_close() == (CLOSE_NOT_FOUND, "")
        await comm.disconnect()


class OpenProgress(TaskProgressConsumer):
    """A subclass whose async hook lets anyone signed in watch, and who wants tracebacks."""

    include_traceback = True

    async def has_permission(self, user: Any, result: Any) -> bool:
        await asyncio.sleep(0)
        return bool(user is not None and user.is_authenticated)


async def test_the_permission_hook_can_be_async_and_overridden(worker: TaskWorker) -> None:
    result = await enqueue_as(ANN, broken)
    app = URLRouter([path("ws/tasks/<str:task_id>/", OpenProgress.as_asgi())])
    comm = WebsocketCommunicator(app, f"/ws/tasks/{result.id}/")
    comm.scope["user"] = BOB
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from())["type"] == "task.state"
    await step(result)
    failed = await comm.receive_json_from()
    assert "ValueError: the data was bad" in failed["error"]["traceback"]
    await comm.receive_close()
    await comm.disconnect()


# -- the SSE endpoint ------------------------------------------------------------------------


def sse(task_id: str, user: Any) -> ApplicationCommunicator:
    scope = {
        "type": "http",
        "method": "GET",
        "path": f"/tasks/{task_id}/events/",
        "headers": [],
        "user": user,
    }
    return ApplicationCommunicator(application, scope)


def parse_event(chunk: bytes) -> tuple[str, dict[str, Any]]:
    fields = dict(line.split(": ", 1) for line in chunk.decode().strip().split("\n"))
    return fields["event"], json.loads(fields["data"])


async def next_event(comm: ApplicationCommunicator) -> tuple[str, dict[str, Any]]:
    message = await comm.receive_output()
    assert message["type"] == "http.response.body"
    assert message["more_body"] is True
    return parse_event(message["body"])


async def test_sse_streams_the_same_messages_as_named_events(worker: TaskWorker) -> None:
    result = await enqueue_as(ANN, stepped, 1)
    comm = sse(result.id, ANN)
    await comm.send_input({"type": "http.request", "body": b""})
    start = await comm.receive_output()
    assert start["status"] == 200
    assert (await comm.receive_output())["body"] == b": open\n\n"
    kind, state = await next_event(comm)
    assert kind == "task.state"
    assert state["id"] == result.id
    await step(result)
    kind, progress = await next_event(comm)
    assert (kind, progress["done"], progress["total"]) == ("task.progress", 1, 1)
    kind, finished = await next_event(comm)
    assert (kind, finished["return_value"]) == ("task.finished", "counted to 1")
    end = await comm.receive_output()
    assert end == {"type": "http.response.body", "body": b"", "more_body": False}
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait()
    assert get_channel_layer().statistics().groups == 0


async def test_sse_refuses_with_403_and_404(worker: TaskWorker) -> None:
    result = await enqueue_as(ANN, stepped, 1)
    for task_id, user, status in ((result.id, BOB, 403), ("0" * 32, STAFF, 404)):
        comm = sse(task_id, user)
        await comm.send_input({"type": "http.request", "body": b""})
        assert (await comm.receive_output())["status"] == status
        assert (await comm.receive_output()).get("more_body", False) is False
        await comm.wait()


async def test_a_route_without_the_id_keyword_is_a_clear_error(
    worker: TaskWorker, caplog: pytest.LogCaptureFixture
) -> None:
    app = URLRouter([path("ws/tasks/<str:job>/", TaskProgressConsumer.as_asgi())])
    comm = WebsocketCommunicator(app, "/ws/tasks/abc/")
    comm.scope["user"] = STAFF
    connected, _ = await comm.connect()
    assert not connected
    assert "URL route keyword 'task_id'" in caplog.text


# -- over a real server: uvicorn, AuthMiddlewareStack, a real websockets client --------------------


def _signed_in(username: str) -> str:
    """A user in the database and the Cookie header of a session signed in as them."""
    user = User.objects.create_user(username, password="not-used")
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@pytest.mark.slow
async def test_over_a_real_server_the_owner_watches_and_a_stranger_is_refused(
    worker: TaskWorker, transactional_db: None
) -> None:
    ann_cookie = await sync_to_async(_signed_in)("ann")
    bob_cookie = await sync_to_async(_signed_in)("bob")
    ann = await User.objects.aget(username="ann")
    result = await enqueue_as(ann, stepped, 2)
    app = AuthMiddlewareStack(application)
    with LiveServer(app) as server:
        url = f"{server.ws_url}/ws/tasks/{result.id}/"
        async with ws_connect(url, additional_headers={"Cookie": bob_cookie}) as stranger:
            with pytest.raises(ConnectionClosed):
                await stranger.recv()
            assert stranger.close_code == CLOSE_FORBIDDEN

        async with ws_connect(url, additional_headers={"Cookie": ann_cookie}) as owner:
            state = await recv_json(owner)
            assert (state["type"], state["done"]) == ("task.state", None)
            await step(result)
            assert (await recv_json(owner))["done"] == 1
            await step(result)
            assert (await recv_json(owner))["done"] == 2
            assert await recv_json(owner) == {
                "type": "task.finished",
                "id": result.id,
                "return_value": "counted to 2",
            }
            with pytest.raises(ConnectionClosed):
                await owner.recv()
            assert owner.close_code == 1000

        # The same job over SSE, after its end: the state, the ending, and the response ends.
        def read_events() -> tuple[int, str]:
            request = urllib.request.Request(
                f"{server.url}/tasks/{result.id}/events/", headers={"Cookie": ann_cookie}
            )
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(request, timeout=5) as response:
                return response.status, response.read().decode()

        status, body = await asyncio.to_thread(read_events)
        assert status == 200
        events = [parse_event(chunk.encode()) for chunk in body.split("\n\n")[1:] if chunk]
        assert [kind for kind, _ in events] == ["task.state", "task.finished"]
        assert events[0][1]["status"] == "SUCCESSFUL"
        assert events[0][1]["done"] == 2


async def test_without_a_channel_layer_the_socket_is_refused_with_the_reason(
    worker: TaskWorker, caplog: pytest.LogCaptureFixture
) -> None:
    result = await enqueue_as(ANN, stepped, 1)
    with override_settings(CHANNEL_LAYERS={}):
        comm = ws(result.id, ANN)
        connected, _ = await comm.connect()
    assert not connected
    assert "needs a channel layer" in caplog.text
