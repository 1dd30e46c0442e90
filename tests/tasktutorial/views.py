from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.views.decorators.http import require_POST

from headrace.tasks import enqueued_by

from .tasks import import_rows


@login_required
@require_POST
def start_import(request):
    rows = request.POST.getlist("row")
    with enqueued_by(request.user):  # only this user (or staff) may watch it
        result = import_rows.enqueue(rows)
    return JsonResponse({"task": result.id}, status=202)
