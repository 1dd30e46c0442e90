"""headrace's task signal, beside Django's ``task_enqueued``, ``task_started`` and
``task_finished`` (which headrace backends send as Django documents).

``task_retried`` is sent when a failed attempt will run again, with ``sender`` (the backend
class), ``task_result`` (the job, READY again), ``exception`` (what the attempt raised, or the
``exc`` given to ``retry()``; the :class:`~headrace.tasks.exceptions.Retry` itself for a bare
``retry()``) and ``delay`` (seconds
until the next attempt may start). ``task_finished`` is sent only when the job has finished
for good.

Backends ask :func:`is_heard` before they build the ``TaskResult`` a signal carries: a signal
nobody would notice costs nothing. Django connects one receiver of its own to each of its
three signals, which logs to the ``django.tasks`` logger; with Django's default ``LOGGING``
its INFO records are built and then dropped by every handler (the console one wants
``DEBUG``), which is most of what a no-op job would otherwise cost.
"""

from __future__ import annotations

import functools
import logging
import weakref
from typing import Any, Final

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import Signal
from django.tasks import signals as django_signals
from django.utils.log import RequireDebugFalse, RequireDebugTrue

__all__ = ["debug_on", "is_heard", "record_dropped", "task_retried"]

task_retried = Signal()

#: Django's own receiver of each task signal: it only logs (at the level :func:`is_heard` is
#: given) to the ``django.tasks`` logger.
_DJANGO_RECEIVERS: Final = {
    django_signals.task_enqueued: django_signals.log_task_enqueued,
    django_signals.task_started: django_signals.log_task_started,
    django_signals.task_finished: django_signals.log_task_finished,
}
_DJANGO_LOGGER: Final = logging.getLogger("django.tasks")
#: Filters whose answer does not depend on the record and that have no side effect.
_PURE_FILTERS: Final = (RequireDebugFalse, RequireDebugTrue)


def is_heard(signal: Signal, level: int = logging.INFO) -> bool:
    """Whether sending ``signal`` could have any effect: a receiver is connected other than
    Django's own logging one, or Django's would emit a record at ``level`` (or might: any
    handler or filter this cannot judge counts as emitting)."""
    receivers = signal.receivers
    if not receivers:
        return False
    if len(receivers) != 1:
        return True
    entry = receivers[0]
    if _known_own.get(signal) is not entry:  # (each connect makes a new entry)
        if not _is_djangos_own(signal, entry):
            return True
        _known_own[signal] = entry
    return not record_dropped(_DJANGO_LOGGER, level)


#: The receiver entry of each of Django's task signals last found to be its own logging
#: receiver (the signals are module-level: holding them is free).
_known_own: dict[Signal, object] = {}


def _is_djangos_own(signal: Signal, entry: Any) -> bool:
    own = _DJANGO_RECEIVERS.get(signal)
    if own is None:
        return False
    try:
        _key, receiver, sender_ref, _is_async = entry
    except (TypeError, ValueError):  # a Django whose receiver entries look different
        return False
    if isinstance(receiver, weakref.ReferenceType):
        receiver = receiver()
    return receiver is own and sender_ref is None


def record_dropped(logger: logging.Logger, level: int) -> bool:
    """True only when a record of ``level`` logged to ``logger`` would surely reach no handler
    and call no filter with a possible side effect (the rules of :meth:`logging.Logger.handle`
    and ``callHandlers``, judging only Django's ``RequireDebug*`` filters)."""
    if not logger.isEnabledFor(level):
        return True  # the record would not even be built
    if logger.filters:
        return False
    found = 0
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            found += 1
            if level >= handler.level and not _rejects(handler):
                return False
        current = current.parent if current.propagate else None
    if found:
        return True
    last = logging.lastResort
    if last is not None:
        return level < last.level
    # With no handler at all, logging prints a one-time warning.
    return not logging.raiseExceptions or logger.manager.emittedNoHandlerWarning


@functools.cache
def debug_on() -> bool:
    """``settings.DEBUG``, read once and again after ``setting_changed`` says it changed
    (``override_settings`` does; Django's documentation asks code not to assign settings at
    run time)."""
    return bool(settings.DEBUG)


def _forget_debug(*, setting: str, **kwargs: object) -> None:
    if setting == "DEBUG":
        debug_on.cache_clear()


setting_changed.connect(_forget_debug)


def _rejects(handler: logging.Handler) -> bool:
    """Whether ``handler``'s filters surely reject every record before any other filter runs."""
    if type(handler).handle is not logging.Handler.handle:
        return False  # its own handle() may act before (or without) filtering
    for check in handler.filters:
        if type(check) not in _PURE_FILTERS:
            return False
        # RequireDebugTrue passes records when DEBUG is on, RequireDebugFalse when it is off.
        if (type(check) is RequireDebugTrue) is not debug_on():
            return True
    return False
