"""ProgRock: a long job whose progress reaches the browser through a worker and the delay server.

The article's design, on today's consumers:

1. The browser sends ``{"action": "start"}``. :class:`ProgressConsumer` records a job, joins
   the job's group, and hands the work to the ``prog-rocker`` channel. It does no work itself.
2. :class:`ProgRocker`, run by a worker (``runworker prog-rocker``, or the workers embedded in
   ``runserver``), takes one step of the job, tells the job's group how far it got, and asks
   the delay server (the ``asgi.delay`` channel) to send it the next step a moment later —
   the article's "lather, rinse, recurse", with no thread put to sleep.
3. Progress goes to a group per job, not to one connection: a reloaded page sends
   ``{"action": "watch", "jobs": [...]}`` with the job ids it remembers, gets each job's
   stored progress at once, and re-joins the groups of the jobs still running. A job that has
   not moved for a while (its next step was lost in a server restart) is resumed from its
   stored progress by exactly one watcher.

The second button runs the same job as a durable task instead (``progress.tasks.rock``):
``{"action": "start_task"}`` enqueues it on behalf of the signed-in user and answers
``task_started``; the page then follows it on its own socket, ``/ws/tasks/<id>/``, served by
headrace's ready-made :class:`~headrace.tasks.consumers.TaskProgressConsumer`.

Frames, server to client: ``started``, ``task_started`` (``task``), ``progress`` (``job``,
``progress``, ``complete``), ``gone`` (a job this server does not know) and ``error``.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from headrace.consumer import AsyncConsumer
from headrace.db import database_sync_to_async
from headrace.generic.websocket import AsyncWebsocketConsumer
from headrace.tasks import enqueued_by
from headrace.tasks.worker import embedded_task_backends

from .models import STEP, Job
from .tasks import rock

__all__ = ["STEP", "WORKER_CHANNEL", "ProgRocker", "ProgressConsumer", "job_group"]

#: The worker channel, named as in the article.
WORKER_CHANNEL = "prog-rocker"
#: Jobs one connection may start or watch; plenty for a demo, and a bound for everyone else.
MAX_JOBS_PER_CONNECTION = 20

_JOB_ID = re.compile(r"[0-9a-f]{32}")

logger = logging.getLogger("demo.progress")


def job_group(job_id: str) -> str:
    return f"job.{job_id}"


@database_sync_to_async
def _create_job() -> str:
    return str(Job.objects.create().id)


@database_sync_to_async
def _jobs(ids: list[str]) -> dict[str, dict[str, Any]]:
    return {job.id: job.as_event() for job in Job.objects.filter(id__in=ids)}


def stall_after() -> float:
    """Seconds without a step after which a running job counts as lost (see ``_claim_stalled``)."""
    return max(2.0, 10 * settings.DEMO_STEP_SECONDS)


@database_sync_to_async
def _claim_stalled(job_id: str) -> bool:
    """Whether this caller should resume a job nobody has stepped for :func:`stall_after`.

    With the in-memory layer a server restart loses the delayed message carrying a job's next
    step. The update is conditional, so of several pages watching the job only one resumes it.
    """
    cutoff = timezone.now() - timedelta(seconds=stall_after())
    claimed = Job.objects.filter(id=job_id, complete=False, updated__lt=cutoff).update(
        updated=timezone.now()
    )
    return claimed == 1


@database_sync_to_async
def _record(job_id: str, progress: int, complete: bool) -> None:
    Job.objects.filter(id=job_id).update(progress=progress, complete=complete)


class ProgressConsumer(AsyncWebsocketConsumer):
    """The page's socket: starts jobs and follows the progress of the jobs it cares about."""

    watching: set[str]
    tasks_started: int

    async def connect(self) -> None:
        self.watching = set()
        self.tasks_started = 0
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for job_id in self.watching:
            await self.channel_layer.group_discard(job_group(job_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            payload = json.loads(text_data) if text_data is not None else None
        except ValueError:
            payload = None
        action = payload.get("action") if isinstance(payload, dict) else None
        if action == "start":
            await self.start_job()
        elif action == "start_task":
            await self.start_task()
        elif action == "watch" and isinstance(payload, dict):
            await self.watch_jobs(payload.get("jobs"))
        else:
            await self.send_json(
                {"type": "error", "error": 'expected {"action": "start"}, "start_task" or "watch"'}
            )

    async def start_job(self) -> None:
        if len(self.watching) >= MAX_JOBS_PER_CONNECTION:
            await self.send_json({"type": "error", "error": "too many jobs on this page"})
            return
        job_id = await _create_job()
        await self.follow(job_id)
        await self.send_json({"type": "started", "job": job_id})
        await self.channel_layer.send(WORKER_CHANNEL, {"type": "rock.start", "job": job_id})

    async def start_task(self) -> None:
        """Enqueue the job as a durable task owned by this user (only they may watch it)."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.send_json({"type": "error", "error": "sign in to run a durable task"})
            return
        if not embedded_task_backends():
            await self.send_json(
                {"type": "error", "error": "tasks run only with the in-memory backend here"}
            )
            return
        if self.tasks_started >= MAX_JOBS_PER_CONNECTION:
            await self.send_json({"type": "error", "error": "too many tasks on this page"})
            return
        self.tasks_started += 1
        with enqueued_by(user):
            result = await rock.aenqueue()
        await self.send_json({"type": "task_started", "task": result.id})

    async def watch_jobs(self, jobs: object) -> None:
        if not isinstance(jobs, list):
            await self.send_json({"type": "error", "error": '"jobs" must be a list of job ids'})
            return
        wanted = [j for j in jobs if isinstance(j, str) and _JOB_ID.fullmatch(j)]
        wanted = wanted[:MAX_JOBS_PER_CONNECTION]
        known = await _jobs(wanted)
        for job_id in wanted:
            state = known.get(job_id)
            if state is None:
                await self.send_json({"type": "gone", "job": job_id})
                continue
            if not state["complete"]:
                await self.follow(job_id)
                if await _claim_stalled(job_id):
                    logger.info("resuming job %s at %d%%", job_id, state["progress"])
                    await self.channel_layer.send(
                        WORKER_CHANNEL,
                        {"type": "rock.continue", "job": job_id, "progress": state["progress"]},
                    )
            await self.send_json({"type": "progress", **state})

    async def follow(self, job_id: str) -> None:
        if job_id not in self.watching:
            self.watching.add(job_id)
            await self.channel_layer.group_add(job_group(job_id), self.channel_name)

    async def job_progress(self, event: dict[str, Any]) -> None:
        """A step of a job this connection follows (sent by the worker to the job's group)."""
        await self.send_json(
            {
                "type": "progress",
                "job": event["job"],
                "progress": event["progress"],
                "complete": event["complete"],
            }
        )

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content))


class ProgRocker(AsyncConsumer):
    """The worker: one step of a job per message, the next step scheduled through the delay server.

    It keeps nothing on ``self`` between messages: everything a step needs travels in the
    message, as in the article.
    """

    async def rock_start(self, message: dict[str, Any]) -> None:
        await self.report(message["job"], 0)

    async def rock_continue(self, message: dict[str, Any]) -> None:
        await self.report(message["job"], int(message["progress"]) + STEP)

    async def report(self, job_id: str, progress: int) -> None:
        complete = progress >= 100
        progress = min(progress, 100)
        await _record(job_id, progress, complete)
        await self.channel_layer.group_send(
            job_group(job_id),
            {"type": "job.progress", "job": job_id, "progress": progress, "complete": complete},
        )
        if not complete:
            await self.channel_layer.send(
                "asgi.delay",
                {
                    "channel": WORKER_CHANNEL,
                    "content": {"type": "rock.continue", "job": job_id, "progress": progress},
                    "delay": round(settings.DEMO_STEP_SECONDS * 1000),
                },
            )
