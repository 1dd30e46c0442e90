# mysite/asgi.py from the seed with `channels` replaced by `headrace` in the import lines, plus
# the origin check Channels' deployment docs recommend (AllowedHostsOriginValidator).
import os

from django.core.asgi import get_asgi_application
from django.urls import path, re_path

from headrace.auth import AuthMiddlewareStack
from headrace.routing import ProtocolTypeRouter, URLRouter
from headrace.security.websocket import AllowedHostsOriginValidator

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django_asgi_app = get_asgi_application()

# Not in the seed: extra consumers for the auth, bad-input and slow-client tests.
from tests.chatapp import extra  # noqa: E402
from tests.chatapp.routing import websocket_urlpatterns  # noqa: E402

websocket_urlpatterns = websocket_urlpatterns + extra.websocket_urlpatterns

# Not in the seed: server-sent events beside Django's views.
http_application = URLRouter(
    [path("events/", extra.NewsStream.as_asgi()), re_path(r"", django_asgi_app)]
)

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
