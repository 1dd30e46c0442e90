"""headrace's ``runserver``, making sure the workers run inside it on the in-memory layer.

headrace's command collects background coroutines in ``get_background_tasks``. When it runs
no workers of its own there (the embedded workers are being wired into it in parallel), this
subclass adds :func:`headrace.worker.run_embedded_workers`, which serves every channel the
``ChannelNameRouter`` routes plus ``asgi.delay`` — and does nothing with the Redis layer,
where ``runworker`` runs in its own process.
"""

from __future__ import annotations

from typing import Any

from headrace.management.commands.runserver import Command as HeadraceRunserver
from headrace.routing import get_default_application
from headrace.server import BackgroundFactory
from headrace.worker import run_embedded_workers


class Command(HeadraceRunserver):
    def get_background_tasks(self, **options: Any) -> list[BackgroundFactory]:
        tasks = super().get_background_tasks(**options)
        if tasks:
            return tasks
        application = get_default_application()
        return [lambda: run_embedded_workers(application)]
