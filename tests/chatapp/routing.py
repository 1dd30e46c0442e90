# chat/routing.py from the seed, unchanged apart from the package name of the consumers module.
from django.urls import re_path

from . import consumers, whoami

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<room>\w+)/$", consumers.ChatConsumer.as_asgi()),
]

# Not in the seed: a consumer that reports scope["user"], to prove session auth end to end.
websocket_urlpatterns += [
    re_path(r"^ws/whoami/$", whoami.WhoAmIConsumer.as_asgi()),
]
