#!/usr/bin/env python
"""The demo's manage.py: ``python demo/manage.py runserver`` (``make demo`` does more)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
