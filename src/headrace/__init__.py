"""headrace: Django Channels, built again — faster, safer and complete.

Import paths mirror Channels' (``headrace.layers``, ``headrace.exceptions``,
``headrace.consumer``, ``headrace.generic.websocket``, ``headrace.routing``...), so porting a
Channels app means replacing ``channels`` with ``headrace`` in its import lines.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CHANNEL_LAYER", "__version__"]

__version__ = "0.1.0.dev0"

#: The ``CHANNEL_LAYERS`` alias used when none is named, as ``channels.DEFAULT_CHANNEL_LAYER``.
DEFAULT_CHANNEL_LAYER = "default"
