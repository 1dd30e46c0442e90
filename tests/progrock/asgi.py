# config/routing.py's channel_routing, as the project's ASGI application.
from headrace.routing import ChannelNameRouter, ProtocolTypeRouter

from .jobs import JobRecorder, NoOp
from .routing import internal_routing, public_routing

# Not in the seed: the jobs channels of the multi-process worker tests and benches.
internal_routing = ChannelNameRouter(
    {
        **internal_routing.application_mapping,
        "jobs": JobRecorder.as_asgi(),
        "noop": NoOp.as_asgi(),
    }
)

application = ProtocolTypeRouter({"websocket": public_routing, "channel": internal_routing})
