"""Who may see the dashboard: active staff, and with ``HEADRACE_DASHBOARD_PERMISSION`` set
(``"app_label.codename"``), only those of them who also hold that permission."""

from __future__ import annotations

from typing import Any

from django.conf import settings

__all__ = ["may_view"]


def may_view(user: Any) -> bool:
    """True if ``user`` may see the dashboard and act on jobs (may query the database: call
    it from sync code, or through ``database_sync_to_async``)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if not (user.is_active and user.is_staff):
        return False
    permission = getattr(settings, "HEADRACE_DASHBOARD_PERMISSION", None)
    if permission:
        if not isinstance(permission, str) or "." not in permission:
            raise ValueError(
                f"HEADRACE_DASHBOARD_PERMISSION must be 'app_label.codename', got {permission!r}"
            )
        return bool(user.has_perm(permission))
    return True
