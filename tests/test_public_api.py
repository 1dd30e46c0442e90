"""The declared public API: a name that appears or disappears by accident fails here.

When you add or remove a public name on purpose, change this list in the same commit (and say
so in CHANGELOG.md).
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC_API: dict[str, set[str]] = {
    "headrace": {"__version__"},
    "headrace.exceptions": {
        "AcceptConnection",
        "ChannelFull",
        "ChannelLayerError",
        "ConfigurationError",
        "DenyConnection",
        "HeadraceError",
        "InvalidChannelLayerError",
        "InvalidChannelName",
        "InvalidDelay",
        "InvalidGroupName",
        "InvalidMessage",
        "InvalidName",
        "LayerConnectionError",
        "MessageTooLarge",
        "RequestAborted",
        "RequestTimeout",
        "StopConsumer",
    },
    "headrace.layers": {
        "DEFAULT_CHANNEL_LAYER",
        "DEFAULT_MAX_MESSAGE_SIZE",
        "BaseChannelLayer",
        "ChannelLayerManager",
        "Clock",
        "InMemoryChannelLayer",
        "LayerStatistics",
        "ManualClock",
        "SystemClock",
        "channel_layers",
        "get_channel_layer",
    },
    "headrace.layers.base": {"DEFAULT_MAX_MESSAGE_SIZE", "BaseChannelLayer", "LayerStatistics"},
    "headrace.layers.clock": {"Clock", "ManualClock", "SystemClock", "TimerHandle"},
    "headrace.layers.codec": {"decode", "encode"},
    "headrace.layers.groups": {"Membership"},
    "headrace.layers.memory": {"InMemoryChannelLayer"},
    "headrace.layers.registry": {
        "DEFAULT_CHANNEL_LAYER",
        "ChannelLayerManager",
        "channel_layers",
        "get_channel_layer",
    },
    "headrace.layers.rules": {
        "MAX_NAME_LENGTH",
        "CapacityTable",
        "check_channel_name",
        "check_group_name",
        "check_message",
        "check_size",
        "due_time",
        "is_process_channel",
        "non_local_name",
        "positive_seconds",
    },
    "headrace.layers.schedule": {"DelaySchedule"},
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
    "headrace.tasks.consumers": {
        "CLOSE_FORBIDDEN",
        "CLOSE_NOT_FOUND",
        "FINAL_TYPES",
        "TaskProgressConsumer",
        "TaskProgressSseConsumer",
        "TaskStream",
        "client_message",
        "state_messages",
    },
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
        "CLEANUP_INTERVAL",
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
    "headrace.worker": {
        "DEFAULT_CONCURRENCY",
        "DEFAULT_SHUTDOWN_TIMEOUT",
        "Worker",
        "WorkerState",
        "WorkerStatistics",
        "embedded_workers",
        "embedded_workers_enabled",
        "routed_channels",
        "run_embedded_workers",
    },
    "headrace.process": {
        "EVENT_LOOPS",
        "cancel_and_wait",
        "event_loop_factory",
        "freeze_startup_objects",
    },
    "headrace.delay": {
        "DELAY_CHANNEL",
        "DelayRequest",
        "forward_delay_request",
        "parse_delay_request",
    },
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
        assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, which is missing"
