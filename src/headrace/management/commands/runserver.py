"""``manage.py runserver`` serving HTTP and WebSocket through uvicorn.

Put ``"headrace"`` in ``INSTALLED_APPS`` *before* ``django.contrib.staticfiles`` and this
command replaces Django's: same arguments, same autoreload, same system and migration checks,
static files served in ``DEBUG`` (or with ``--insecure``), and every WebSocket connect and
disconnect logged. The application is ``ASGI_APPLICATION``, or Django's plain ASGI handler
when that setting is absent.

Background coroutines that live as long as the server are collected by
:meth:`Command.get_background_tasks`. With the in-memory layer that is the embedded workers:
every channel the project's ``ChannelNameRouter`` routes, plus ``asgi.delay``, is served inside
this process, so one command runs the whole system in development; so are the queues of every
in-memory task backend in ``TASKS`` (:func:`headrace.tasks.worker.run_embedded_task_workers`)
and their schedule (:func:`headrace.tasks.beat.run_embedded_beats`). Set
``HEADRACE_EMBEDDED_WORKERS = False`` to run them with ``manage.py runworker`` instead; with any
other layer they never run here.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Any, cast

from django.apps import apps
from django.conf import settings
from django.core.management.commands.runserver import Command as DjangoRunserver
from django.db import connections
from django.utils import autoreload

from ...process import freeze_startup_objects
from ...server import BackgroundFactory, Server, ServerOptions, log_websocket_connections
from ...types import ASGIApp

__all__ = ["Command"]

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import (
        Command as BaseCommand,
    )
else:  # pragma: no cover - depends on INSTALLED_APPS
    BaseCommand = DjangoRunserver  # type: ignore[misc, assignment]

logger = logging.getLogger("headrace.server")


class Command(BaseCommand):
    help = "Start a development server for HTTP and WebSocket (uvicorn, via headrace)."

    # Set by Django's runserver.handle() from the command line.
    addr: str
    port: str
    _raw_ipv6: bool

    def get_application(self, **options: Any) -> ASGIApp:
        """The ASGI application to serve, with static files and connection logging."""
        if getattr(settings, "ASGI_APPLICATION", None):
            from ...routing import get_default_application

            application = get_default_application()
        else:
            from django.core.asgi import get_asgi_application

            application = cast(ASGIApp, get_asgi_application())
        use_static = options.get("use_static_handler", False) and (
            settings.DEBUG or options.get("insecure_serving", False)
        )
        if apps.is_installed("django.contrib.staticfiles") and use_static:
            from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

            application = cast(ASGIApp, ASGIStaticFilesHandler(application))  # type: ignore[arg-type]
        return log_websocket_connections(application)

    def get_background_tasks(self, **options: Any) -> list[BackgroundFactory]:
        """Coroutine factories to run beside the server for its lifetime."""
        from ...tasks.beat import run_embedded_beats
        from ...tasks.worker import run_embedded_task_workers

        if not getattr(settings, "ASGI_APPLICATION", None):
            # Django's plain ASGI handler routes no background channels; tasks may still run.
            return [run_embedded_task_workers, run_embedded_beats]
        from ...routing import get_default_application
        from ...worker import run_embedded_workers

        application = get_default_application()
        return [
            lambda: run_embedded_workers(application),
            run_embedded_task_workers,
            run_embedded_beats,
        ]

    def inner_run(self, *args: Any, **options: Any) -> None:
        autoreload.raise_last_exception()
        if not options["skip_checks"]:
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        for conn in connections.all(initialized_only=True):
            conn.close()
        host = self.addr.strip("[]") if self._raw_ipv6 else self.addr
        serve_options = ServerOptions(
            host=host,
            port=int(self.port),
            log_level="info" if int(options.get("verbosity", 1)) >= 1 else "warning",
        )
        self.stdout.write(
            f"headrace: serving HTTP and WebSocket with uvicorn at "
            f"http://{self.addr if not self._raw_ipv6 else '[' + host + ']'}:{self.port}/\n"
            f"Quit the server with {'CTRL-BREAK' if sys.platform == 'win32' else 'CONTROL-C'}.\n"
        )
        self.stdout.flush()
        _log_connections_to_console()
        try:
            server = Server(
                self.get_application(**options),
                serve_options,
                background=self.get_background_tasks(**options),
            )
            freeze_startup_objects()
            server.run()
        except OSError as exc:
            messages = {
                errno.EACCES: "You don't have permission to access that port.",
                errno.EADDRINUSE: "That port is already in use.",
                errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
            }
            self.stderr.write(f"Error: {messages.get(exc.errno or 0, exc)}")
            os._exit(1)
        except KeyboardInterrupt:
            sys.exit(0)


def _log_connections_to_console() -> None:
    """Show headrace's INFO lines (WebSocket connects/disconnects) unless logging is set up."""
    root = logging.getLogger("headrace")
    if root.handlers or root.level != logging.NOTSET:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)-9s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
