from django.conf import settings
from django.http import HttpRequest


def channel_layer(request: HttpRequest) -> dict[str, str]:
    """The short name of the channel layer in use, for the footer."""
    backend: str = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    return {"layer": backend.rsplit(".", 1)[-1]}
