"""docs/tutorial/tasks.md, run: its code is tests/tasktutorial/, and what it claims happens here.

The page's code blocks must equal the files (so the tutorial cannot drift from what is tested).
Then the story end to end: a signed-in user posts rows to the view, the job fails once on a busy
upstream and is retried by its ``autoretry_for`` policy, and the user's WebSocket — through
``AuthMiddlewareStack`` and the session cookie, as in a browser — sees the state, every row's
progress on both attempts, and the result; another user's socket is refused with 4403.

The upstream is replaced by a fake that waits for the test before each row, and the worker's
jitter is zero so the retry runs at once: the order of events is the test's, not the timer's.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.test import AsyncClient, override_settings

from headrace.auth import AuthMiddlewareStack
from headrace.layers import get_channel_layer
from headrace.routing import URLRouter
from headrace.tasks import JobState
from headrace.tasks.consumers import CLOSE_FORBIDDEN
from headrace.tasks.worker import TaskWorker
from headrace.testing import WebsocketCommunicator
from tests.tasktutorial import routing
from tests.tasktutorial import tasks as tutorial

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "tutorial" / "tasks.md"
APP = ROOT / "tests" / "tasktutorial"
#: A code block that is a file of the tutorial's app starts with ``# imports/<name>.py``.
BLOCK = re.compile(r"```python\n# imports/(\w+\.py)\n(.*?)```", re.DOTALL)


def test_the_page_shows_the_tested_files_exactly() -> None:
    blocks = dict(BLOCK.findall(PAGE.read_text(encoding="utf-8")))
    assert sorted(blocks) == ["routing.py", "tasks.py", "views.py"]
    for name, code in blocks.items():
        assert code == (APP / name).read_text(encoding="utf-8"), name


# -- the story, end to end ---------------------------------------------------------------------


@pytest.fixture
def tutorial_settings() -> Iterator[None]:
    tasks = {
        "default": {
            "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
            # No throttle: each row's report reaches the socket (the test waits for each).
            "OPTIONS": {"progress_rate": 1_000_000},
        }
    }
    with override_settings(TASKS=tasks, ROOT_URLCONF="tests.tasktutorial.urls"):
        yield


class Upstream:
    """The service, faked: each row waits for :meth:`allow`; one row is busy once."""

    def __init__(self, busy_once: str) -> None:
        self.allowed: asyncio.Queue[None] = asyncio.Queue()
        self.busy_once: str | None = busy_once
        self.received: list[str] = []

    def allow(self, rows: int = 1) -> None:
        for _ in range(rows):
            self.allowed.put_nowait(None)

    async def send_row(self, row: str) -> None:
        await self.allowed.get()
        if row == self.busy_once:
            self.busy_once = None
            raise tutorial.UpstreamBusy("come back later")
        self.received.append(row)


@pytest.fixture
async def upstream(
    tutorial_settings: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Upstream]:
    fake = Upstream(busy_once="b")
    monkeypatch.setattr(tutorial, "send_row", fake.send_row)
    await get_channel_layer().flush()
    worker = TaskWorker("default", jitter=lambda cap: 0.0)
    run = asyncio.ensure_future(worker.run())
    yield fake
    worker.stop(now=True)
    await asyncio.wait_for(run, 5)


async def _signed_in(username: str) -> tuple[AsyncClient, bytes]:
    """A browser's view of a signed-in user: an HTTP client and its session cookie."""
    await sync_to_async(User.objects.create_user)(username, password="not-used")
    client = AsyncClient()
    assert await client.alogin(username=username, password="not-used")
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    return client, f"{settings.SESSION_COOKIE_NAME}={session}".encode()


def _socket(task_id: str, cookie: bytes) -> WebsocketCommunicator:
    app = AuthMiddlewareStack(URLRouter(routing.websocket_urlpatterns))
    return WebsocketCommunicator(app, f"/ws/tasks/{task_id}/", headers=[(b"cookie", cookie)])


async def _progress(comm: WebsocketCommunicator) -> tuple[int, int, str]:
    message: dict[str, Any] = await comm.receive_json_from()
    assert message["type"] == "task.progress", message
    return message["done"], message["total"], message["info"]["row"]


@pytest.mark.slow
async def test_a_task_with_retries_and_live_progress(
    upstream: Upstream, transactional_db: None
) -> None:
    client, cookie = await _signed_in("ann")
    _, stranger = await _signed_in("bob")

    response = await client.post("/import/", {"row": ["a", "b", "c"]})
    assert response.status_code == 202
    task_id = response.json()["task"]

    refused = _socket(task_id, stranger)
    assert (await refused.connect())[0]
    assert (await refused.receive_close())[0] == CLOSE_FORBIDDEN
    await refused.disconnect()

    ws = _socket(task_id, cookie)
    assert (await ws.connect())[0]
    state = await ws.receive_json_from()
    assert (state["type"], state["done"]) == ("task.state", None)

    # First attempt: row "a" goes through, row "b" finds the upstream busy.
    upstream.allow()
    assert await _progress(ws) == (1, 3, "a")
    upstream.allow()
    # autoretry_for=(UpstreamBusy,): the job is READY again and runs a second time.
    upstream.allow()
    assert await _progress(ws) == (1, 3, "a")
    upstream.allow()
    assert await _progress(ws) == (2, 3, "b")
    upstream.allow()
    assert await _progress(ws) == (3, 3, "c")
    assert await ws.receive_json_from() == {
        "type": "task.finished",
        "id": task_id,
        "return_value": {"imported": 3, "attempts": 2},
    }
    assert (await ws.receive_close())[0] == 1000
    await ws.disconnect()

    result = await tutorial.import_rows.aget_result(task_id)
    assert result.state is JobState.SUCCESSFUL
    assert result.attempts == 2
    assert [e.exception_class_path for e in result.errors] == [
        "tests.tasktutorial.tasks.UpstreamBusy"
    ]
    assert upstream.received == ["a", "a", "b", "c"]
