"""One job's progress, streamed to the browser: a WebSocket consumer and an SSE endpoint.

A task reports progress with ``context.progress(done, total, **info)``; headrace sends each
report, and the job's end, to the group ``headrace.task.<id>``. These consumers turn that
group into a stream for one page::

    # routing.py
    from headrace.tasks.consumers import TaskProgressConsumer, TaskProgressSseConsumer

    websocket_urlpatterns = [path("ws/tasks/<str:task_id>/", TaskProgressConsumer.as_asgi())]
    http_urlpatterns = [path("tasks/<str:task_id>/events/", TaskProgressSseConsumer.as_asgi())]

Both read the job id from the URL route's ``task_id`` (:attr:`~TaskStream.id_url_kwarg`) and
speak the same JSON messages, in this order:

1. ``{"type": "task.state", "id", "status", "done", "total", "info"}`` at once: where the job
   is now (``done``/``total``/``info`` are ``null`` until it first reports progress), so a page
   that subscribes late, or reconnects, starts from the truth rather than from nothing;
2. every ``task.progress`` (``id``, ``done``, ``total``, ``info``) while it runs. The stream
   joins the group before it reads the state (so no ending can slip between the two), so a
   report already on its way may arrive after a state that is newer than it; a retry also
   starts its reports again. A progress bar shows the largest figure it has seen;
3. one final message — ``task.finished`` (``return_value``), ``task.failed`` (``error``:
   ``exception_class``, and ``traceback`` only with :attr:`~TaskStream.include_traceback`) or
   ``task.cancelled`` — after which the stream ends: the WebSocket closes with 1000, the SSE
   response ends (call ``EventSource.close()`` on the final event, or the browser reconnects
   and is told the same ending again).

Who may watch: :meth:`TaskStream.has_permission` (``user``, ``result``); by default the user
who enqueued the job (:func:`headrace.tasks.enqueued_by`) or a staff member, so put
``AuthMiddlewareStack`` in front. A refusal is told apart from an unknown job:

============  ==============================  =========================
                       WebSocket                       SSE
============  ==============================  =========================
not allowed   accepted, then closed with 4403  HTTP 403
unknown job   accepted, then closed with 4404  HTTP 404
============  ==============================  =========================

The WebSocket is accepted before it is closed because a browser never sees the status of a
refused handshake (only 1006): a close code is the one thing a page can act on.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Mapping
from typing import Any, Final

from django.tasks import TaskResult, TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist

from ..exceptions import InvalidChannelLayerError
from ..generic.sse import AsyncSseConsumer
from ..generic.websocket import AsyncWebsocketConsumer
from ..types import Message, Scope
from .backends.base import check_job_id
from .context import progress_group
from .results import finished_message, job_owner, job_progress

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_NOT_FOUND",
    "FINAL_TYPES",
    "TaskProgressConsumer",
    "TaskProgressSseConsumer",
    "TaskStream",
    "client_message",
    "state_messages",
]

#: WebSocket close code when :meth:`TaskStream.has_permission` says no (HTTP 403's meaning).
CLOSE_FORBIDDEN: Final = 4403
#: WebSocket close code for a job id the backend does not know (HTTP 404's meaning).
CLOSE_NOT_FOUND: Final = 4404
#: The message types that end a job's stream.
FINAL_TYPES: Final = frozenset({"task.finished", "task.failed", "task.cancelled"})


# -- the pure part: what a subscriber is told ----------------------------------------------------


def state_messages(
    result: TaskResult[Any, Any],
    progress: Mapping[str, Any] | None,
    *,
    include_traceback: bool = False,
) -> list[dict[str, Any]]:
    """What a new subscriber is sent first: the state, and the ending if the job has ended.

    ``progress`` is the job's last report (:func:`headrace.tasks.job_progress`), ``None``
    before the first one. The ending is the one the worker announced to the group
    (:func:`headrace.tasks.finished_message`), as the browser gets it (:func:`client_message`).
    """
    last = progress or {}
    messages: list[dict[str, Any]] = [
        {
            "type": "task.state",
            "id": result.id,
            "status": TaskResultStatus(result.status).value,
            "done": last.get("done"),
            "total": last.get("total"),
            "info": last.get("info"),
        }
    ]
    ending = finished_message(result)
    if ending is not None:
        messages.append(client_message(ending, include_traceback=include_traceback))
    return messages


def client_message(message: Message, *, include_traceback: bool = False) -> dict[str, Any]:
    """A group message as the browser gets it: the same keys, minus a failure's traceback."""
    out = dict(message)
    error = out.get("error")
    if not include_traceback and isinstance(error, dict) and "traceback" in error:
        out["error"] = {key: value for key, value in error.items() if key != "traceback"}
    return out


# -- the shared I/O --------------------------------------------------------------------------


class TaskStream:
    """What the WebSocket and the SSE consumer share: finding the job and checking access.

    Subclass either consumer and override :meth:`has_permission` (sync or async) to change who
    may watch; set :attr:`backend_alias` for a ``TASKS`` alias other than ``"default"``.
    """

    #: The ``TASKS`` alias whose backend stores the jobs.
    backend_alias: str = "default"
    #: The URL route keyword that holds the job id.
    id_url_kwarg: str = "task_id"
    #: Send a failed job's traceback to the browser (off: it shows server internals).
    include_traceback: bool = False

    scope: Scope
    channel_layer_alias: str
    task_id: str
    _ended: bool

    def has_permission(self, user: Any, result: TaskResult[Any, Any]) -> bool | Awaitable[bool]:
        """Whether ``user`` may watch the job; default: whoever enqueued it, or staff.

        ``user`` is ``scope["user"]`` (``None`` without ``AuthMiddlewareStack``). A job
        enqueued outside :func:`headrace.tasks.enqueued_by` has no owner: only staff see it.
        """
        if user is None or not getattr(user, "is_authenticated", False):
            return False
        if getattr(user, "is_staff", False):
            return True
        owner = job_owner(result)
        return owner is not None and owner == str(user.pk)

    async def _find_job(self) -> tuple[TaskResult[Any, Any] | None, bool]:
        """The job of this URL and whether the user may watch it (``None``: no such job)."""
        if getattr(self, "channel_layer", None) is None:
            raise InvalidChannelLayerError(
                f"{type(self).__name__} follows a task's group, so it needs a channel layer, "
                f"but the CHANNEL_LAYERS alias {self.channel_layer_alias!r} is not configured"
            )
        kwargs = self.scope.get("url_route", {}).get("kwargs", {})
        task_id = kwargs.get(self.id_url_kwarg)
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(
                f"{type(self).__name__} needs the job id in the URL route keyword "
                f"{self.id_url_kwarg!r}: route it with path('.../<str:{self.id_url_kwarg}>/')"
            )
        self.task_id = task_id
        self._ended = False
        try:
            check_job_id(task_id)
        except ValueError:
            return None, False  # no job can have this id (and it must not reach a store)
        try:
            result = await task_backends[self.backend_alias].aget_result(task_id)
        except TaskResultDoesNotExist:
            return None, False
        allowed = self.has_permission(self.scope.get("user"), result)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        return result, bool(allowed)

    async def _current_state(self) -> list[dict[str, Any]]:
        """Read the job again (after joining its group, so no ending can slip between)."""
        result = await task_backends[self.backend_alias].aget_result(self.task_id)
        return state_messages(
            result, job_progress(result), include_traceback=self.include_traceback
        )


class TaskProgressConsumer(TaskStream, AsyncWebsocketConsumer):
    """A WebSocket that streams one job's progress as JSON text frames, then closes."""

    async def connect(self) -> None:
        result, allowed = await self._find_job()
        await self.accept()
        if result is None:
            await self.close(CLOSE_NOT_FOUND)
            return
        if not allowed:
            await self.close(CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(progress_group(self.task_id), self.channel_name)
        self.groups = [progress_group(self.task_id)]  # left again on disconnect
        for message in await self._current_state():
            await self._forward(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The stream is one-way; frames from the browser are ignored."""

    async def _forward(self, message: dict[str, Any]) -> None:
        if self._ended:
            return  # the ending was already sent (the state can race the group's final message)
        await self.send(text_data=json.dumps(message))
        if message["type"] in FINAL_TYPES:
            self._ended = True
            await self.close(1000)

    async def task_progress(self, event: Message) -> None:
        await self._forward(client_message(event, include_traceback=self.include_traceback))

    task_finished = task_failed = task_cancelled = task_progress


class TaskProgressSseConsumer(TaskStream, AsyncSseConsumer):
    """Server-sent events for one job: each message is an event named after its ``type``.

    ``event: task.progress`` / ``data: {...}``; listen with
    ``source.addEventListener("task.progress", ...)`` and close the ``EventSource`` on
    ``task.finished``, ``task.failed`` or ``task.cancelled``.
    """

    async def connect(self) -> None:
        result, allowed = await self._find_job()
        if result is None:
            await self.deny(404, b"No such task.")
            return
        if not allowed:
            await self.deny(403, b"You may not watch this task.")
            return
        await self.accept()
        await self.subscribe(progress_group(self.task_id))
        for message in await self._current_state():
            await self._forward(message)

    async def _forward(self, message: dict[str, Any]) -> None:
        if self._ended:
            return
        await self.send_event(json.dumps(message), event=message["type"])
        if message["type"] in FINAL_TYPES:
            self._ended = True
            await self.close()

    async def task_progress(self, event: Message) -> None:
        await self._forward(client_message(event, include_traceback=self.include_traceback))

    task_finished = task_failed = task_cancelled = task_progress
