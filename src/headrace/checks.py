"""System checks (``manage.py check``) for mistakes that would otherwise fail quietly or late.

``runserver`` runs them before it serves, so these mistakes stop it at start-up rather than
failing the first request:

- ``headrace.E001``: a ``CHANNEL_LAYERS`` entry that cannot give a layer (not a dict, no
  ``BACKEND``, a ``BACKEND`` that cannot be imported or is not a class);
- ``headrace.E002``: a bad value or unknown key in an alias's ``CONFIG`` or ``TEST_CONFIG``,
  one error per mistake, each naming the alias and the key;
- ``headrace.E003``: a ``BACKEND`` whose extra is not installed (the Redis layer without
  ``headrace[redis]``); the error says what to install;
- ``headrace.W001``: ``headrace`` listed after ``django.contrib.staticfiles``.

The channel layer checks build each alias's configuration as the registry would, and connect
to nothing.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

__all__ = ["check_channel_layers", "check_runserver_order"]


@register()
def check_channel_layers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Build every ``CHANNEL_LAYERS`` alias's configuration; an error for each mistake."""
    from headrace.exceptions import ConfigurationError
    from headrace.layers.registry import channel_layers, missing_extra

    try:
        aliases = list(channel_layers.configs)
    except ConfigurationError as error:
        return [Error(str(error), id="headrace.E001")]
    found: list[CheckMessage] = []
    for alias in aliases:
        try:
            channel_layers.backend_class(alias)
        except ConfigurationError as error:
            cause = error.__cause__
            extra = missing_extra(cause) if isinstance(cause, ImportError) else None
            found.append(
                Error(
                    str(error),
                    hint=None if extra is None else f"pip install 'headrace[{extra}]'",
                    id="headrace.E001" if extra is None else "headrace.E003",
                )
            )
            continue
        for config_key in ("CONFIG", "TEST_CONFIG"):
            if config_key == "TEST_CONFIG" and "TEST_CONFIG" not in channel_layers.configs[alias]:
                continue
            try:
                channel_layers.configuration(alias, config_key)
            except ConfigurationError as error:
                found.extend(Error(problem, id="headrace.E002") for problem in error.problems)
    return found


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
