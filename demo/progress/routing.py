from django.urls import path

from headrace.tasks.consumers import TaskProgressConsumer

from . import consumers

websocket_urlpatterns = [
    path("ws/progress/", consumers.ProgressConsumer.as_asgi()),
    # Any task's progress, for the user who enqueued it (or staff): headrace's own consumer.
    path("ws/tasks/<str:task_id>/", TaskProgressConsumer.as_asgi()),
]
