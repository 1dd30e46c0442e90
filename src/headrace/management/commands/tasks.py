"""``manage.py tasks SUBCOMMAND``: look at headrace's tasks, and act on them.

``tasks schedule [--count N]``: each schedule entry, its next fire times (in ``TIME_ZONE``)
and the last slot fired, as its backend keeps it (the in-memory backend keeps it in the
process that runs the schedule, so a separate ``manage.py`` process shows "never").

On a backend whose queues another process can inspect (Redis), see
:mod:`headrace.tasks.admin`: ``tasks stats``, ``tasks list [--state S] [--queue Q]``,
``tasks dead``, ``tasks retry ID ...|--all-dead``, ``tasks cancel ID`` (any backend) and
``tasks purge QUEUE [--yes]`` (asks first). ``--backend ALIAS`` picks the ``TASKS`` entry.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.tasks.exceptions import TaskResultDoesNotExist

from headrace.exceptions import ConfigurationError, HeadraceError
from headrace.tasks import admin
from headrace.tasks.backends.base import HeadraceTaskBackend
from headrace.tasks.beat import format_report, schedule_report

__all__ = ["Command"]


class Command(BaseCommand):
    help = (
        "Inspect headrace tasks: 'schedule' lists the periodic tasks and when they fire; "
        "stats, list, dead, retry, cancel and purge look at and act on the queues."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        schedule = commands.add_parser(
            "schedule", help="Each schedule entry, its next fire times and its last fired slot"
        )
        schedule.add_argument(
            "--count", type=int, default=5, help="Fire times to show per entry (default 5)"
        )
        parsers = {
            "stats": commands.add_parser("stats", help="Jobs and counters per queue"),
            "list": commands.add_parser("list", help="The jobs of every queue, or of one state"),
            "dead": commands.add_parser("dead", help="Dead letters and their last error"),
            "retry": commands.add_parser("retry", help="Enqueue dead letters again"),
            "cancel": commands.add_parser("cancel", help="Cancel a job"),
            "purge": commands.add_parser("purge", help="Delete every job of a queue"),
        }
        for parser_ in parsers.values():
            parser_.add_argument(
                "--backend", default="default", help="TASKS alias (default 'default')"
            )
        for name in ("stats", "list", "dead"):
            parsers[name].add_argument("--queue", help="Only this queue")
        parsers["list"].add_argument("--state", choices=admin.STATES, help="Only this state")
        parsers["retry"].add_argument("ids", nargs="*", metavar="ID", help="Dead letters' ids")
        parsers["retry"].add_argument(
            "--all-dead", action="store_true", help="Every dead letter of every queue"
        )
        parsers["cancel"].add_argument("id", metavar="ID")
        parsers["purge"].add_argument("queue", metavar="QUEUE")
        parsers["purge"].add_argument(
            "--yes", action="store_true", help="Do not ask for confirmation"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        subcommand = options.get("subcommand")
        if subcommand in ("stats", "list", "dead", "retry", "cancel", "purge"):
            try:
                self._queues(subcommand, options)
            except (HeadraceError, ValueError, TaskResultDoesNotExist) as error:
                raise CommandError(str(error)) from error
            return
        if subcommand != "schedule":
            raise CommandError(
                "name a subcommand: schedule, stats, list, dead, retry, cancel or purge"
            )
        if options["count"] < 1:
            raise CommandError(f"--count must be 1 or more, got {options['count']}")
        try:
            reports = schedule_report(count=options["count"])
        except ConfigurationError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(format_report(reports), ending="")

    def _queues(self, subcommand: str, options: dict[str, Any]) -> None:
        from django.tasks import task_backends

        alias = options["backend"]
        try:
            backend = task_backends[alias]
        except Exception as error:
            raise ConfigurationError(f"no usable TASKS[{alias!r}]: {error}") from error
        out = self.stdout
        if subcommand == "cancel":
            if not isinstance(backend, HeadraceTaskBackend):
                raise ConfigurationError(f"TASKS[{alias!r}] is not a headrace backend")
            out.write(admin.cancel_job(backend, options["id"]) + "\n")
            return
        inspectable = admin.inspectable(backend, alias)
        if subcommand == "stats":
            out.write(admin.format_stats(inspectable, options["queue"]), ending="")
        elif subcommand == "list":
            lines = admin.list_jobs(inspectable, options["state"], options["queue"])
            out.write(admin.format_jobs(lines), ending="")
        elif subcommand == "dead":
            out.write(
                admin.format_jobs(admin.dead_letters(inspectable, options["queue"])), ending=""
            )
        elif subcommand == "retry":
            done = admin.retry_dead_letters(
                inspectable, options["ids"], all_dead=options["all_dead"]
            )
            for old, new in done.items():
                out.write(f"dead letter {old} enqueued again as {new}\n")
        elif subcommand == "purge":
            queue = options["queue"]
            if not options["yes"]:
                answer = input(f"Delete every job of queue {queue!r} in TASKS[{alias!r}]? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    out.write("nothing deleted\n")
                    return
            deleted = admin.purge_queue(inspectable, queue)
            out.write(f"deleted {deleted} job(s) of queue {queue!r}\n")
