"""headrace: Django Channels, built again — faster, safer and complete.

Import paths mirror Channels' (``headrace.layers``, ``headrace.exceptions``,
``headrace.consumer``, ``headrace.generic.websocket``, ``headrace.routing``...), so porting a
Channels app means replacing ``channels`` with ``headrace`` in its import lines.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0.dev0"
