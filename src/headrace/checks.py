"""System checks (``manage.py check``) for mistakes that would otherwise fail quietly."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register

__all__ = ["check_runserver_order"]


@register()
def check_runserver_order(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``headrace`` must come before ``django.contrib.staticfiles`` for its ``runserver``."""
    apps = list(settings.INSTALLED_APPS)
    if "headrace" not in apps or "django.contrib.staticfiles" not in apps:
        return []
    if apps.index("headrace") < apps.index("django.contrib.staticfiles"):
        return []
    return [
        Warning(
            "'headrace' comes after 'django.contrib.staticfiles' in INSTALLED_APPS, so "
            "`manage.py runserver` is Django's and does not serve WebSockets.",
            hint="Move 'headrace' above 'django.contrib.staticfiles'.",
            id="headrace.W001",
        )
    ]
