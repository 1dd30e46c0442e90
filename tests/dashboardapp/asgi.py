"""The dashboard on a project's ASGI routing, as docs/how-to/monitoring.md shows it."""

from django.core.asgi import get_asgi_application

django_app = get_asgi_application()

from headrace.auth import AuthMiddlewareStack  # noqa: E402
from headrace.dashboard.routing import websocket_urlpatterns  # noqa: E402
from headrace.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

application = ProtocolTypeRouter(
    {"http": django_app, "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns))}
)
