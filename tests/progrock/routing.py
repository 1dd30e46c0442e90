# The seed's public_routing and internal_routing, as Channels 2+ routers.
from django.urls import re_path

from headrace.routing import ChannelNameRouter, URLRouter

from .consumers import ProgRockConsumer, ProgRocker

public_routing = URLRouter([re_path(r"^prog/$", ProgRockConsumer.as_asgi())])

internal_routing = ChannelNameRouter({"prog-rocker": ProgRocker.as_asgi()})
