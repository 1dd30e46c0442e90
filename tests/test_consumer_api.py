"""The public names of the consumer, routing, middleware, server and testing modules.

A name that appears or disappears by accident fails here; change this list on purpose (and
say so in CHANGELOG.md).
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC_API: dict[str, set[str]] = {
    "headrace.consumer": {
        "DEFAULT_CHANNEL_LAYER",
        "AsyncConsumer",
        "SyncConsumer",
        "get_handler_name",
    },
    "headrace.generic": set(),
    "headrace.generic.websocket": {
        "AsyncJsonWebsocketConsumer",
        "AsyncWebsocketConsumer",
        "BadFrame",
        "JsonWebsocketConsumer",
        "WebsocketConsumer",
        "WebsocketProtocol",
    },
    "headrace.generic.http": {"AsyncHttpConsumer"},
    "headrace.generic.sse": {"AsyncSseConsumer", "format_event"},
    "headrace.generic.outbox": {"SLOW_CLIENT_CLOSE_CODE", "Outbox"},
    "headrace.generic.broadcast": {"encode_shared"},
    "headrace.routing": {
        "ChannelNameRouter",
        "ProtocolTypeRouter",
        "URLRouter",
        "get_default_application",
    },
    "headrace.middleware": {"BaseMiddleware"},
    "headrace.sessions": {"CookieMiddleware", "SessionMiddleware", "SessionMiddlewareStack"},
    "headrace.auth": {
        "AuthMiddleware",
        "AuthMiddlewareStack",
        "UserLazyObject",
        "get_user",
        "login",
        "logout",
    },
    "headrace.security": set(),
    "headrace.security.websocket": {
        "AllowedHostsOriginValidator",
        "OriginValidator",
        "WebsocketDenier",
    },
    "headrace.db": {
        "DatabaseSyncToAsync",
        "aclose_old_connections",
        "close_old_connections_unless_suspended",
        "connection_cleanup_suspended",
        "database_sync_to_async",
        "suspend_connection_cleanup",
    },
    "headrace.settings": {"Limits", "SlowClientPolicy", "limits"},
    "headrace.checks": {"check_runserver_order"},
    "headrace.types": {
        "ASGIApp",
        "HTTPRequestEvent",
        "HTTPResponseBodyEvent",
        "HTTPResponseStartEvent",
        "Headers",
        "Message",
        "Receive",
        "Scope",
        "Send",
        "WebSocketAcceptEvent",
        "WebSocketCloseEvent",
        "WebSocketConnectEvent",
        "WebSocketDisconnectEvent",
        "WebSocketReceiveEvent",
        "WebSocketSendEvent",
    },
    "headrace.utils": {"get_handler_name", "name_that_thing", "sync_handler_pool"},
    "headrace.server": {
        "BackgroundFactory",
        "Server",
        "ServerOptions",
        "log_websocket_connections",
        "uvicorn_config",
    },
    "headrace.testing": {
        "ApplicationCommunicator",
        "ChannelsLiveServerTestCase",
        "HttpCommunicator",
        "LiveServer",
        "LiveServerTestCase",
        "WebsocketCommunicator",
    },
    "headrace.testing.communicators": {
        "ApplicationCommunicator",
        "HttpCommunicator",
        "WebsocketCommunicator",
    },
    "headrace.testing.live": {"ChannelsLiveServerTestCase", "LiveServer", "LiveServerTestCase"},
    "headrace.testing.pytest_plugin": {"headrace_live_server"},
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_declared_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    declared = set(module.__all__)
    assert declared == PUBLIC_API[module_name], (
        f"{module_name}.__all__ changed: added {sorted(declared - PUBLIC_API[module_name])}, "
        f"removed {sorted(PUBLIC_API[module_name] - declared)}"
    )
    for name in declared:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"


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
