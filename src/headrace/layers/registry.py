"""The ``CHANNEL_LAYERS`` registry: alias -> configured layer, made lazily.

Same settings shape as Channels::

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "headrace.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 200},
            "TEST_CONFIG": {...},   # used by make_test_backend()
        }
    }

A backend that declares ``process_wide = True`` gets one instance per alias for the whole
process; any other gets one instance per alias per running event loop (plus one for code that
runs outside any loop). A bad entry raises :class:`~headrace.exceptions.ConfigurationError`
naming the alias and the key that is wrong, the first time the alias is used — and at
start-up, where the system check (:mod:`headrace.checks`) builds every alias's configuration.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any, Final

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from headrace import DEFAULT_CHANNEL_LAYER
from headrace.exceptions import ConfigurationError
from headrace.layers.base import BaseChannelLayer
from headrace.layers.config import LayerConfig
from headrace.process import running_loop

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "ChannelLayerManager",
    "channel_layers",
    "get_channel_layer",
    "missing_extra",
]

#: Modules that come with one of headrace's extras: a backend that fails to import for want of
#: one of them is fixed by installing the extra.
_EXTRA_OF_MODULE: Final = {"redis": "redis", "hiredis": "redis", "cryptography": "redis"}


def missing_extra(error: ImportError) -> str | None:
    """The headrace extra (``"redis"``) whose absence caused ``error``, if that is the cause."""
    return _EXTRA_OF_MODULE.get((error.name or "").partition(".")[0])


class ChannelLayerManager:
    """Makes and caches the layers named in ``settings.CHANNEL_LAYERS``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._shared: dict[str, BaseChannelLayer] = {}
        self._per_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, BaseChannelLayer]
        ] = weakref.WeakKeyDictionary()
        self._outside_loop: dict[str, BaseChannelLayer] = {}
        setting_changed.connect(self._setting_changed)

    @property
    def configs(self) -> dict[str, Any]:
        value = getattr(settings, "CHANNEL_LAYERS", None) or {}
        if not isinstance(value, dict):
            raise ConfigurationError(
                f"CHANNEL_LAYERS must be a dict of alias -> settings, got {type(value).__name__}"
            )
        return value

    def _setting_changed(self, *, setting: str, **kwargs: Any) -> None:
        if setting == "CHANNEL_LAYERS":
            self.reset()

    def reset(self) -> None:
        """Forget every layer made so far (after a settings change, or between tests)."""
        with self._lock:
            self._shared.clear()
            self._per_loop = weakref.WeakKeyDictionary()
            self._outside_loop.clear()

    def make_backend(self, alias: str) -> BaseChannelLayer:
        """A new layer for ``alias`` from its BACKEND and CONFIG."""
        return self._make(alias, "CONFIG")

    def make_test_backend(self, alias: str) -> BaseChannelLayer:
        """A new layer for ``alias`` from its BACKEND and TEST_CONFIG."""
        return self._make(alias, "TEST_CONFIG")

    def backend_class(self, alias: str) -> type[Any]:
        """The class named by ``alias``'s BACKEND, imported; KeyError for an unknown alias.

        Raises ConfigurationError for an entry that is not a dict, a missing BACKEND, or one
        that cannot be imported (naming the extra to install when that is why).
        """
        entry = self._entry(alias)
        where = f"CHANNEL_LAYERS[{alias!r}]"
        backend_path = entry.get("BACKEND")
        if not isinstance(backend_path, str) or not backend_path:
            raise ConfigurationError(f"{where} has no BACKEND (a dotted path to a layer class)")
        try:
            backend = import_string(backend_path)
        except ImportError as error:
            extra = missing_extra(error)
            if extra is None:
                raise ConfigurationError(
                    f"{where}['BACKEND'] = {backend_path!r} cannot be imported: {error}"
                ) from error
            raise ConfigurationError(
                f"{where}['BACKEND'] = {backend_path!r} needs the {extra!r} extra, which is not "
                f"installed ({error}): pip install 'headrace[{extra}]'"
            ) from error
        if not isinstance(backend, type):
            raise ConfigurationError(f"{where}['BACKEND'] = {backend_path!r} is not a class")
        return backend

    def configuration(
        self, alias: str, config_key: str = "CONFIG"
    ) -> tuple[type[Any], LayerConfig | dict[str, Any]]:
        """``alias``'s backend class and its checked configuration, without connecting.

        The configuration is the backend's :class:`~headrace.layers.config.LayerConfig` built
        from ``config_key`` (``"CONFIG"``, or ``"TEST_CONFIG"`` which falls back to CONFIG);
        for a backend that is not a headrace layer, the plain dict. Raises
        ConfigurationError naming the alias and key of every mistake.
        """
        backend = self.backend_class(alias)
        entry = self._entry(alias)
        where = f"CHANNEL_LAYERS[{alias!r}]"
        if config_key == "TEST_CONFIG" and "TEST_CONFIG" not in entry:
            config_key = "CONFIG"
        settings = entry.get(config_key) or {}
        if not isinstance(settings, dict):
            raise ConfigurationError(
                f"{where}[{config_key!r}] must be a dict, got {type(settings).__name__}"
            )
        if issubclass(backend, BaseChannelLayer):
            return backend, backend.config_class.from_settings(
                settings, source=f"{where}[{config_key!r}]"
            )
        return backend, settings

    def _entry(self, alias: str) -> dict[str, Any]:
        entry = self.configs.get(alias)
        if entry is None:
            raise KeyError(alias)
        if not isinstance(entry, dict):
            raise ConfigurationError(
                f"CHANNEL_LAYERS[{alias!r}] must be a dict, got {type(entry).__name__}"
            )
        return entry

    def _make(self, alias: str, config_key: str) -> BaseChannelLayer:
        backend, config = self.configuration(alias, config_key)
        if isinstance(config, LayerConfig):
            layer: BaseChannelLayer = backend(config=config)
            return layer
        try:
            layer = backend(**config)  # a layer written for Channels: plain keyword arguments
        except TypeError as error:
            raise ConfigurationError(
                f"CHANNEL_LAYERS[{alias!r}][{config_key!r}] is not accepted: {error}"
            ) from error
        return layer

    def __getitem__(self, alias: str) -> BaseChannelLayer:
        with self._lock:
            layer = self._shared.get(alias)
            if layer is not None:
                return layer
            loop = running_loop()
            cache = self._outside_loop if loop is None else self._per_loop.setdefault(loop, {})
            layer = cache.get(alias)
            if layer is None:
                layer = self.make_backend(alias)
                if getattr(layer, "process_wide", False):
                    self._shared[alias] = layer
                else:
                    cache[alias] = layer
            return layer

    def __contains__(self, alias: object) -> bool:
        return alias in self.configs

    def set(self, alias: str, layer: BaseChannelLayer) -> BaseChannelLayer | None:
        """Use ``layer`` for ``alias`` in the whole process; returns the one it replaces."""
        with self._lock:
            old = self._shared.get(alias)
            self._shared[alias] = layer
            return old


#: The registry of the running process.
channel_layers = ChannelLayerManager()


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> BaseChannelLayer | None:
    """The layer configured as ``alias`` in CHANNEL_LAYERS, or None when there is none."""
    try:
        return channel_layers[alias]
    except KeyError:
        return None
