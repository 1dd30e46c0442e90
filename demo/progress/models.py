"""A ProgRock job's progress, stored so that a page reloaded mid-job can pick it up again."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models

#: Percent a job advances per step (the article's ``+ 3``); the worker and the task share it.
STEP = 3


def new_job_id() -> str:
    return uuid.uuid4().hex


class Job(models.Model):
    id = models.CharField(primary_key=True, max_length=32, default=new_job_id, editable=False)
    progress = models.PositiveSmallIntegerField(default=0)
    complete = models.BooleanField(default=False)
    started = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"job {self.id}: {self.progress}%"

    def as_event(self) -> dict[str, Any]:
        return {"job": self.id, "progress": self.progress, "complete": self.complete}
