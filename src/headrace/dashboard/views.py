"""The dashboard's pages and its three actions on a job.

Every view requires :func:`~headrace.dashboard.permissions.may_view` (staff; see
``HEADRACE_DASHBOARD_PERMISSION``): a visitor who is not signed in is sent to
``settings.LOGIN_URL``, anyone else gets 403. The actions are POST only and CSRF-protected
(whatever the project's middleware); the page asks for a confirmation before cancel and
purge. The pages are filled and kept live by
:class:`~headrace.dashboard.consumers.DashboardConsumer`; a job's page also shows everything
at once without JavaScript.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_protect, ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from headrace.dashboard.feed import find_job, job_json
from headrace.dashboard.permissions import may_view
from headrace.tasks.states import JobState

__all__ = ["cancel_job", "index", "job_detail", "purge_job", "retry_job", "staff_only"]

_View = Callable[..., HttpResponse]


def staff_only(view: _View) -> _View:
    """Refuse who may not see the dashboard (see the module docstring)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not may_view(user):
            return HttpResponseForbidden("the dashboard is for staff only\n")
        return view(request, *args, **kwargs)

    return wrapped


def _ws_path(request: HttpRequest) -> str:
    return reverse("headrace_dashboard:index") + "ws/"


@require_GET
@staff_only
@ensure_csrf_cookie
def index(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "headrace/dashboard/index.html",
        {
            "states": [s.name for s in JobState],
            "ws_path": _ws_path(request),
            "purged": request.GET.get("purged", "")[:80],
            "who": request.user.get_username(),
        },
    )


@require_GET
@staff_only
@ensure_csrf_cookie
def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    found = find_job(job_id)
    if found is None:
        raise Http404(f"no job {job_id} (unknown, or its result expired)")
    alias, _, job = found
    shown = job_json(job)
    return render(
        request,
        "headrace/dashboard/job.html",
        {
            "job": shown,
            "arguments": json.dumps(shown["args"]),
            "keywords": json.dumps(shown["kwargs"]),
            "result": json.dumps(shown["return_value"])
            if job.state is JobState.SUCCESSFUL
            else "—",
            "backend": alias,
            "ws_path": _ws_path(request),
            "who": request.user.get_username(),
        },
    )


def _action(name: str, act: Callable[[Any, str], HttpResponse]) -> _View:
    @require_POST
    @staff_only
    @csrf_protect
    def view(request: HttpRequest, job_id: str) -> HttpResponse:
        found = find_job(job_id)
        if found is None:
            raise Http404(f"no job {job_id} (unknown, or its result expired)")
        try:
            return act(found[1], job_id)
        except ValueError as error:
            return HttpResponse(f"{error}\n", status=409, content_type="text/plain")

    view.__name__ = view.__qualname__ = f"{name}_job"
    return view


def _retry(inspector: Any, job_id: str) -> HttpResponse:
    new_id = inspector.retry(job_id)
    return redirect("headrace_dashboard:job", job_id=new_id)


def _cancel(inspector: Any, job_id: str) -> HttpResponse:
    inspector.cancel(job_id)
    return redirect("headrace_dashboard:job", job_id=job_id)


def _purge(inspector: Any, job_id: str) -> HttpResponse:
    inspector.purge(job_id)
    return redirect(reverse("headrace_dashboard:index") + f"?purged={job_id}")


#: Enqueue a finished job again; redirects to the new job.
retry_job = _action("retry", _retry)
#: Cancel a waiting or running job.
cancel_job = _action("cancel", _cancel)
#: Forget a finished job now.
purge_job = _action("purge", _purge)
