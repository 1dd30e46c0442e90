"""``manage.py tasks SUBCOMMAND``: look at headrace's tasks.

``tasks schedule [--count N]``: each schedule entry, its next fire times (in ``TIME_ZONE``)
and the last slot fired, as its backend keeps it (the in-memory backend keeps it in the
process that runs the schedule, so a separate ``manage.py`` process shows "never").
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from headrace.exceptions import ConfigurationError
from headrace.tasks.beat import format_report, schedule_report

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Inspect headrace tasks: 'schedule' lists the periodic tasks and when they fire."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        schedule = commands.add_parser(
            "schedule", help="Each schedule entry, its next fire times and its last fired slot"
        )
        schedule.add_argument(
            "--count", type=int, default=5, help="Fire times to show per entry (default 5)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("subcommand") != "schedule":
            raise CommandError("name a subcommand: schedule")
        if options["count"] < 1:
            raise CommandError(f"--count must be 1 or more, got {options['count']}")
        try:
            reports = schedule_report(count=options["count"])
        except ConfigurationError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(format_report(reports), ending="")
