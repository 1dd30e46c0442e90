"""``/metrics`` for Prometheus (``pip install 'headrace[metrics]'``).

Everything here is read when Prometheus scrapes, by custom collectors; nothing is counted in
``prometheus_client`` objects inside the process:

- task counters and histograms come from each task backend's
  :meth:`~headrace.dashboard.inspect.TaskInspector.counters` — kept in the store, so on Redis
  or a database they are cluster-wide and survive restarts (any process may be scraped);
  in-memory backend's live in its process;
- ``headrace_queue_length{queue,state}`` and ``headrace_worker_up`` from the same inspector;
- ``headrace_channel_layer_*`` from each channel layer's ``statistics()`` of this process;
- ``headrace_websocket_connections`` and ``headrace_sse_streams`` from
  :mod:`headrace.connections` (this process).

With ``PROMETHEUS_MULTIPROC_DIR`` set (several server processes behind one address), the
view also serves the metrics the processes recorded there with ``prometheus_client``'s own
objects (your application's), merged by its ``MultiProcessCollector``.

Route it where Prometheus looks::

    from headrace.dashboard.metrics import metrics_view
    urlpatterns = [..., path("metrics", metrics_view)]

``HEADRACE_METRICS_TOKEN`` (optional): when set, a scrape must send
``Authorization: Bearer <token>``; otherwise the endpoint answers anyone who can reach it
(keep it on an internal address).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from headrace.dashboard.inspect import (
    COUNTER_NAMES,
    HISTOGRAM_BUCKETS,
    HISTOGRAM_NAMES,
    inspector_for,
)

__all__ = [
    "ChannelLayerCollector",
    "ConnectionCollector",
    "TaskCollector",
    "metrics_view",
    "registry",
    "task_backends_for_metrics",
]

logger = logging.getLogger("headrace.dashboard")

_LAYER_COUNTERS = (
    ("sent", "messages accepted by send and group_send"),
    ("received", "messages handed to a receive() call"),
    ("rejected_full", "send() calls refused with ChannelFull"),
    ("dropped_full", "messages dropped because a channel was full"),
    ("expired", "messages that expired unread"),
    ("group_sends", "group_send() calls"),
    ("delayed", "messages scheduled with a delay"),
)
_LAYER_GAUGES = (
    ("delayed_pending", "delayed messages not yet due"),
    ("channels", "channels with queued messages or waiting readers"),
    ("groups", "groups with at least one member"),
)


def task_backends_for_metrics() -> list[Any]:
    """The ``TASKS`` backends that have an inspector (others are skipped, and logged)."""
    from django.tasks import task_backends

    found = []
    for alias in getattr(settings, "TASKS", None) or {}:
        try:
            backend = task_backends[alias]
            inspector_for(backend)
        except Exception:
            logger.debug("TASKS[%r] has no inspector; not in /metrics", alias, exc_info=True)
            continue
        found.append(backend)
    return found


class TaskCollector:
    """Task counters, histograms, queue lengths and workers, read from the backends."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        counters = {
            name: CounterMetricFamily(
                f"headrace_task_{name}",
                f"Tasks {name} (from the task backend's store)",
                labels=["task", "queue"],
            )
            for name in COUNTER_NAMES
        }
        histograms = {
            name: HistogramMetricFamily(
                f"headrace_task_{name}_seconds",
                "Task attempt run time" if name == "runtime" else "Time from due to started",
                labels=["task", "queue"],
            )
            for name in HISTOGRAM_NAMES
        }
        lengths = GaugeMetricFamily(
            "headrace_queue_length", "Jobs in a queue by state", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "headrace_queue_oldest_ready_age_seconds",
            "How long the longest-waiting due job has waited",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            "headrace_worker_up",
            "1 while a task worker heartbeats, 0 once it is gone",
            labels=["worker", "host", "pid"],
        )
        bounds = [str(b) for b in HISTOGRAM_BUCKETS] + ["+Inf"]
        for backend in task_backends_for_metrics():
            inspector = inspector_for(backend)
            snapshot = inspector.counters()
            for (name, task, queue), value in snapshot.counts.items():
                if name in counters:
                    counters[name].add_metric([task, queue], value)
            for (name, task, queue), histogram in snapshot.histograms.items():
                if name in histograms:
                    histograms[name].add_metric(
                        [task, queue],
                        list(zip(bounds, histogram.buckets, strict=True)),
                        histogram.sum,
                    )
            for stats in inspector.queues():
                for state in ("ready", "delayed", "running", "dead"):
                    lengths.add_metric([stats.name, state], getattr(stats, state))
                if stats.oldest_ready_age is not None:
                    oldest.add_metric([stats.name], stats.oldest_ready_age)
            for worker in inspector.workers():
                workers.add_metric(
                    [worker.id, worker.host, str(worker.pid)], 1.0 if worker.up else 0.0
                )
        yield from counters.values()
        yield from histograms.values()
        yield lengths
        yield oldest
        yield workers


class ChannelLayerCollector:
    """``headrace_channel_layer_*`` from ``statistics()`` of this process's layers."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from headrace.dashboard.realtime import layer_statistics

        families: dict[str, Any] = {}
        for name, doc in _LAYER_COUNTERS:
            families[name] = CounterMetricFamily(
                f"headrace_channel_layer_{name}", f"Channel layer: {doc}", labels=["layer"]
            )
        for name, doc in _LAYER_GAUGES:
            families[name] = GaugeMetricFamily(
                f"headrace_channel_layer_{name}", f"Channel layer: {doc}", labels=["layer"]
            )
        for alias, stats in layer_statistics().items():
            for name, family in families.items():
                family.add_metric([alias], getattr(stats, name))
        yield from families.values()


class ConnectionCollector:
    """Open WebSocket connections and SSE streams of this process."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from headrace.connections import connection_counts

        counts = connection_counts()
        yield GaugeMetricFamily(
            "headrace_websocket_connections",
            "Open WebSocket connections (this process)",
            value=counts.websockets,
        )
        yield GaugeMetricFamily(
            "headrace_sse_streams",
            "Open server-sent event streams (this process)",
            value=counts.sse,
        )


def registry() -> Any:
    """A ``CollectorRegistry`` with headrace's collectors (and, with
    ``PROMETHEUS_MULTIPROC_DIR`` set, the processes' own metrics)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    for collector in (TaskCollector(), ChannelLayerCollector(), ConnectionCollector()):
        registry.register(collector)
    return registry


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format of :func:`registry` (see the module docstring)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    token = getattr(settings, "HEADRACE_METRICS_TOKEN", None)
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return HttpResponse(
                "a bearer token is required\n", status=401, content_type="text/plain"
            )
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
