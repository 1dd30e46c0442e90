# config/routing.py and progrock/routing.py from the seed, with the import lines changed
# (`channels.routing` -> `headrace.compat.v1`). The seed's root list shows only the public
# include; internal_routing is included beside it so one application serves both.
# fmt: off
from headrace.compat.v1 import include, route

from .consumers import worker, ws_connect, ws_receive

public_routing = [
    route('websocket.connect', ws_connect),
    route('websocket.receive', ws_receive),
]

internal_routing = [
    route('prog-rocker', worker)
]

channel_routing = [
    include('tests.progrock_v1.routing.public_routing', path=r'^/prog/'),
    include(internal_routing),
]
