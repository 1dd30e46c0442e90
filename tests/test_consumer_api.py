"""Channels' import paths resolve under headrace (the declared names: test_public_api.py)."""

from __future__ import annotations

import importlib


def test_channels_import_paths_exist() -> None:
    """Every Channels import a porter is likely to have resolves under headrace."""
    pairs = {
        "headrace.consumer": ["AsyncConsumer", "SyncConsumer"],
        "headrace.generic.websocket": [
            "WebsocketConsumer",
            "AsyncWebsocketConsumer",
            "JsonWebsocketConsumer",
            "AsyncJsonWebsocketConsumer",
        ],
        "headrace.generic.http": ["AsyncHttpConsumer"],
        "headrace.routing": ["ProtocolTypeRouter", "URLRouter", "ChannelNameRouter"],
        "headrace.auth": ["AuthMiddlewareStack", "login", "logout", "get_user"],
        "headrace.sessions": ["CookieMiddleware", "SessionMiddleware", "SessionMiddlewareStack"],
        "headrace.security.websocket": ["OriginValidator", "AllowedHostsOriginValidator"],
        "headrace.db": ["database_sync_to_async"],
        "headrace.exceptions": ["StopConsumer", "AcceptConnection", "DenyConnection"],
        "headrace.layers": ["get_channel_layer"],
        "headrace.testing": [
            "ApplicationCommunicator",
            "WebsocketCommunicator",
            "HttpCommunicator",
            "ChannelsLiveServerTestCase",
        ],
    }
    for module_name, names in pairs.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert hasattr(module, name), f"{module_name}.{name}"
