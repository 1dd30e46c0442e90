"""The tables of the database task backend (app ``headrace``; see the backend's docstring).

A job lives in :class:`TaskJob` while it is waiting or running, and moves to
:class:`TaskJobResult` in the same statement that finishes it, so the table workers scan stays
as small as the work in hand. Times are seconds since the epoch (``float``) from the database's
clock, as the store computes with them in SQL; the admin shows them as dates.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from headrace.tasks.states import JobState

__all__ = [
    "TaskCounter",
    "TaskDeadLetter",
    "TaskJob",
    "TaskJobResult",
    "TaskScheduleSlot",
    "TaskWorkerHeartbeat",
]

STATE_CHOICES = [(state.value, state.name.title()) for state in JobState]


class _JobFields(models.Model):
    """The columns a job keeps from enqueue to its result."""

    task_path = models.CharField(max_length=300)
    queue = models.CharField(max_length=100)
    priority = models.SmallIntegerField(default=0)
    state = models.CharField(max_length=10, choices=STATE_CHOICES, default=JobState.READY.value)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    options = models.JSONField(default=dict)
    owner = models.CharField(max_length=100, null=True, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    enqueued_at = models.FloatField()
    due_at = models.FloatField()
    expires_at = models.FloatField(null=True, blank=True)
    started_at = models.FloatField(null=True, blank=True)
    last_attempted_at = models.FloatField(null=True, blank=True)
    worker_ids = models.JSONField(default=list)
    errors = models.JSONField(default=list)
    retries = models.IntegerField(default=0)
    losses = models.IntegerField(default=0)  #: leases that lapsed (WorkerLost)
    progress = models.JSONField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)

    class Meta:
        abstract = True


class TaskJob(_JobFields):
    """A waiting (READY) or running (RUNNING) job; a RUNNING one holds a lease."""

    seq = models.BigAutoField(primary_key=True)  #: FIFO order within a priority
    job_id = models.CharField(max_length=80)
    lease_token = models.CharField(max_length=40, null=True, blank=True)
    lease_worker = models.CharField(max_length=80, null=True, blank=True)
    lease_expires_at = models.FloatField(null=True, blank=True)

    class Meta:
        app_label = "headrace"
        verbose_name = "task job"
        # Unique constraints rather than unique=True: on PostgreSQL the latter adds a second
        # (LIKE) index that every insert and delete would pay for.
        constraints = [
            models.UniqueConstraint(fields=["job_id"], name="headrace_job_id"),
            # Live jobs only are in this table, so a plain unique constraint is exactly
            # "one live job per key" (NULLs never conflict).
            models.UniqueConstraint(fields=["idempotency_key"], name="headrace_job_key_live"),
        ]
        indexes = [
            models.Index(
                fields=["queue", "-priority", "due_at", "seq"],
                condition=Q(state="READY"),
                name="headrace_job_ready",
            ),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(state="RUNNING"),
                name="headrace_job_lease",
            ),
            models.Index(
                fields=["lease_worker"],
                condition=Q(state="RUNNING"),
                name="headrace_job_worker",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_path} {self.job_id} ({self.state})"


class TaskJobResult(_JobFields):
    """A finished job (SUCCESSFUL, FAILED or CANCELLED), kept until ``result_expires_at``."""

    id = models.BigAutoField(primary_key=True)
    job_id = models.CharField(max_length=80)
    finished_at = models.FloatField()
    result_expires_at = models.FloatField()
    return_value = models.JSONField(null=True, blank=True)

    class Meta:
        app_label = "headrace"
        verbose_name = "task result"
        constraints = [models.UniqueConstraint(fields=["job_id"], name="headrace_result_id")]
        indexes = [models.Index(fields=["result_expires_at"], name="headrace_result_expiry")]

    def __str__(self) -> str:
        return f"{self.task_path} {self.job_id} ({self.state})"


class TaskDeadLetter(models.Model):
    """A job whose worker was lost ``max_deliveries`` times: kept for a human to retry."""

    job_id = models.CharField(max_length=80)
    task_path = models.CharField(max_length=300)
    queue = models.CharField(max_length=100)
    priority = models.SmallIntegerField(default=0)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    options = models.JSONField(default=dict)
    owner = models.CharField(max_length=100, null=True, blank=True)
    errors = models.JSONField(default=list)
    worker_ids = models.JSONField(default=list)
    losses = models.IntegerField(default=0)
    dead_at = models.FloatField()
    retried_as = models.CharField(max_length=80, null=True, blank=True)

    class Meta:
        app_label = "headrace"
        verbose_name = "task dead letter"
        indexes = [
            models.Index(fields=["job_id"], name="headrace_dead_job"),
            models.Index(fields=["dead_at"], name="headrace_dead_at"),
        ]

    def __str__(self) -> str:
        return f"{self.task_path} {self.job_id}"


class TaskWorkerHeartbeat(models.Model):
    """A task worker process that renews its leases (deleted when it stops)."""

    worker_id = models.CharField(max_length=80, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    queues = models.JSONField(default=list)
    started_at = models.FloatField()
    last_seen_at = models.FloatField()
    running = models.IntegerField(default=0)  #: jobs it held at its last heartbeat

    class Meta:
        app_label = "headrace"
        verbose_name = "task worker"
        indexes = [models.Index(fields=["last_seen_at"], name="headrace_worker_seen")]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid} ({self.worker_id})"


class TaskScheduleSlot(models.Model):
    """The last slot fired for one schedule entry (see :mod:`headrace.tasks.beat`): a slot
    fires only if it is later than this one, in the transaction that adds its job."""

    entry = models.CharField(max_length=80, primary_key=True)
    slot = models.FloatField()  #: seconds since the epoch

    class Meta:
        app_label = "headrace"
        verbose_name = "schedule slot"

    def __str__(self) -> str:
        return f"{self.entry} @ {self.slot}"


class TaskCounter(models.Model):
    """What purged results had added to the dashboard's counters and histograms (see
    :mod:`headrace.tasks.backends.database.inspection`): a result's share moves here in the
    transaction that deletes it, so the counters never go down."""

    name = models.CharField(max_length=40)  #: a counter, or ``<histogram>_bucket_<i>``/``_sum``
    task_path = models.CharField(max_length=300)
    queue = models.CharField(max_length=100)
    value = models.FloatField(default=0.0)

    class Meta:
        app_label = "headrace"
        verbose_name = "task counter"
        constraints = [
            models.UniqueConstraint(
                fields=["name", "task_path", "queue"], name="headrace_counter_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.task_path} {self.queue} = {self.value}"
