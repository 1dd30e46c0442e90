"""The dashboard's WebSocket: live updates, batched, for staff only.

Route it beside your other WebSocket routes (behind ``AuthMiddlewareStack``)::

    from headrace.dashboard.routing import websocket_urlpatterns as dashboard_urls
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter([..., *dashboard_urls])))

The page talks JSON over it:

- the browser sends ``{"type": "query", "state", "task", "search"}`` (the job list's filters)
  and ``{"type": "watch", "id"}`` (the job whose page is open) whenever they change;
- the server sends ``{"type": "update", ...}`` at most once per sample of the
  :class:`~headrace.dashboard.feed.Feed` (``HEADRACE_DASHBOARD_INTERVAL``, 0.5 s): the latest
  sample, the jobs of the page's query and the watched job. A slow browser gets the newest
  state when it next reads, never a backlog.

Someone who may not see the dashboard (:func:`~headrace.dashboard.permissions.may_view`) is
accepted, then closed with 4403 (a browser never sees a refused handshake's status).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from headrace.dashboard.feed import Feed, feed, find_job, job_json, job_row, list_jobs
from headrace.dashboard.inspect import JobQuery
from headrace.dashboard.permissions import may_view
from headrace.db import database_sync_to_async
from headrace.generic.websocket import AsyncJsonWebsocketConsumer
from headrace.tasks.states import JobState

__all__ = ["CLOSE_FORBIDDEN", "JOB_LIMIT", "DashboardConsumer", "query_from"]

logger = logging.getLogger("headrace.dashboard")

CLOSE_FORBIDDEN: Final = 4403
#: Jobs sent per update (the newest of those matching the query).
JOB_LIMIT: Final = 100
_MAX_FILTER = 200


def query_from(content: dict[str, Any]) -> JobQuery:
    """The job list's filters from a browser message; :class:`ValueError` names a bad one."""
    state = content.get("state") or None
    if state is not None:
        try:
            state = JobState[str(state).upper()]
        except KeyError:
            raise ValueError(
                f"state must be one of {', '.join(s.name for s in JobState)}, got {state!r}"
            ) from None
    texts = {}
    for name in ("task", "search"):
        value = content.get(name) or ""
        if not isinstance(value, str) or len(value) > _MAX_FILTER:
            raise ValueError(f"{name} must be a string of at most {_MAX_FILTER} characters")
        texts[name] = value.strip()
    return JobQuery(state=state, task=texts["task"], search=texts["search"], limit=JOB_LIMIT)


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.query = JobQuery(limit=JOB_LIMIT)
        self.watched: str | None = None
        self._poke = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._feed: Feed | None = None

    async def connect(self) -> None:
        await self.accept()
        if not await database_sync_to_async(may_view)(self.scope.get("user")):
            await self.close(CLOSE_FORBIDDEN)
            return
        self._feed = feed()
        self._feed.subscribe()
        self._sender = asyncio.ensure_future(self._send_updates(self._feed))

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self._feed is None:
            return
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "query":
                self.query = query_from(content)
            elif kind == "watch":
                watched = content.get("id")
                if watched is not None and (not isinstance(watched, str) or len(watched) > 80):
                    raise ValueError("id must be a job id (at most 80 characters) or null")
                self.watched = watched
            else:
                raise ValueError(f"type must be 'query' or 'watch', got {kind!r}")
        except ValueError as error:
            await self.send_json({"type": "error", "error": str(error)})
            return
        self._poke.set()

    async def disconnect(self, code: int) -> None:
        if self._sender is not None:
            self._sender.cancel()
        if self._feed is not None:
            self._feed.unsubscribe()
            self._feed = None

    async def _send_updates(self, feed: Feed) -> None:
        version = 0
        while True:
            newer = asyncio.ensure_future(feed.wait_newer(version))
            poked = asyncio.ensure_future(self._poke.wait())
            try:
                await asyncio.wait([newer, poked], return_when=asyncio.FIRST_COMPLETED)
            finally:
                newer.cancel()
                poked.cancel()
            self._poke.clear()
            if feed.latest is None:
                continue
            version = feed.version
            try:
                update = await asyncio.to_thread(self._update, feed)
                await self.send_json(update)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("a dashboard update could not be sent")
                await asyncio.sleep(feed.interval)

    def _update(self, feed: Feed) -> dict[str, Any]:
        cpu = time.thread_time()
        sample = feed.latest or {}
        page = list_jobs(self.query)
        watched = None
        if self.watched is not None:
            found = find_job(self.watched)
            watched = job_json(found[2]) if found is not None else {"id": self.watched}
        update = {
            "type": "update",
            **sample,
            "jobs": {"total": page.total, "rows": [job_row(job) for job in page.jobs]},
            "job": watched,
        }
        feed.charge(time.thread_time() - cpu)
        return update
