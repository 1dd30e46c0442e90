"""The dashboard's WebSocket route, for the project's ASGI application::

    from headrace.dashboard.routing import websocket_urlpatterns as dashboard_urls

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([*your_urls, *dashboard_urls]))
        ),
    })

The route is ``headrace/ws/``: the page connects to the prefix its own URL was included at
plus ``ws/``; include the pages at ``headrace/`` or route :data:`DashboardConsumer` yourself
at ``<your prefix>ws/``.
"""

from __future__ import annotations

from django.urls import path

from .consumers import DashboardConsumer

__all__ = ["DashboardConsumer", "websocket_urlpatterns"]

websocket_urlpatterns = [path("headrace/ws/", DashboardConsumer.as_asgi())]  # type: ignore[arg-type]
