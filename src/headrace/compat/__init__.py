"""Shims for code written against older Channels APIs; see :mod:`headrace.compat.v1`."""

from __future__ import annotations

__all__: list[str] = []
