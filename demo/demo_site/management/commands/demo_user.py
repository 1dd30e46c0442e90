"""``manage.py demo_user``: create the demo account (demo / demo) unless there is one."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create the demo superuser (demo / demo) when no user with that name exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        name = options["username"]
        if users.objects.filter(username=name).exists():
            return
        users.objects.create_superuser(name, email="", password=options["password"])
        self.stdout.write(f"Created the demo user: {name} / {options['password']}")
