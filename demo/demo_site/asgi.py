"""The demo's ASGI application: Django for HTTP, consumers for WebSockets, a worker channel.

Shaped like the asgi.py of a Channels project; only the import lines name headrace.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the consumers import models

from blog.routing import websocket_urlpatterns as blog_urls  # noqa: E402
from chat.routing import websocket_urlpatterns as chat_urls  # noqa: E402
from progress.consumers import ProgRocker  # noqa: E402
from progress.routing import websocket_urlpatterns as progress_urls  # noqa: E402

from headrace.auth import AuthMiddlewareStack  # noqa: E402
from headrace.dashboard.routing import websocket_urlpatterns as dashboard_urls  # noqa: E402
from headrace.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from headrace.security.websocket import AllowedHostsOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter([*chat_urls, *progress_urls, *blog_urls, *dashboard_urls])
            )
        ),
        # Background work: runworker (or runserver's embedded workers) reads these channels.
        "channel": ChannelNameRouter({"prog-rocker": ProgRocker.as_asgi()}),
    }
)
