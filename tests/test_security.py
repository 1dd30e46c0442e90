"""Origin validation for WebSocket handshakes."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from headrace.generic.websocket import AsyncWebsocketConsumer
from headrace.security.websocket import AllowedHostsOriginValidator, OriginValidator
from headrace.testing import WebsocketCommunicator


def _headers(*origins: str | bytes) -> list[tuple[bytes, bytes]]:
    return [(b"origin", o if isinstance(o, bytes) else o.encode()) for o in origins]


async def _admitted(app: Any, headers: list[tuple[bytes, bytes]], **scope: Any) -> bool:
    comm = WebsocketCommunicator(app, "/", headers=headers)
    comm.scope.update(scope)
    accepted, _ = await comm.connect()
    await comm.disconnect(code=1000 if accepted else 1006)
    return accepted


ALLOWED = ["https://example.com", ".trusted.org", "http://localhost:8000", "plain.net"]


@pytest.mark.parametrize(
    ("origin", "admitted"),
    [
        ("https://example.com", True),
        ("https://example.com:443", True),
        ("http://example.com", False),  # scheme differs
        ("https://example.com:8443", False),  # port differs
        ("https://sub.example.com", False),  # no leading dot in the pattern
        ("https://example.com.evil.net", False),
        ("https://trusted.org", True),
        ("wss://deep.sub.trusted.org:9999", True),
        ("https://nottrusted.org", False),
        ("http://localhost:8000", True),
        ("http://localhost", False),
        ("http://plain.net:1234", True),
        ("null", False),
        ("not a url", False),
        ("https://example.com:notaport", False),
        ("", False),
    ],
)
async def test_origin_allowlist(origin: str, admitted: bool) -> None:
    app = OriginValidator(AsyncWebsocketConsumer.as_asgi(), ALLOWED)
    assert await _admitted(app, _headers(origin)) is admitted


async def test_several_origin_headers_are_refused_even_if_each_is_allowed() -> None:
    app = OriginValidator(AsyncWebsocketConsumer.as_asgi(), ["*"])
    assert await _admitted(app, _headers("https://example.com", "https://example.com")) is False


async def test_missing_origin_only_with_wildcard() -> None:
    assert await _admitted(OriginValidator(AsyncWebsocketConsumer.as_asgi(), ALLOWED), []) is False
    assert await _admitted(OriginValidator(AsyncWebsocketConsumer.as_asgi(), ["*"]), []) is True


async def test_undecodable_origin_is_refused() -> None:
    app = OriginValidator(AsyncWebsocketConsumer.as_asgi(), ["example.com"])
    assert await _admitted(app, _headers(b"https://ex\xffample.com")) is False


async def test_refusal_is_a_close_before_accept_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Even when the server offers denial responses: uvicorn logs an ERROR for each of those."""
    app = OriginValidator(AsyncWebsocketConsumer.as_asgi(), ["example.com"])
    comm = WebsocketCommunicator(app, "/", headers=_headers("https://evil.net"))
    comm.scope["extensions"] = {"websocket.http.response": {}}
    assert await comm.connect() == (False, 1000)
    assert await comm.receive_nothing()
    assert [r.getMessage() for r in caplog.records if r.name == "headrace.security"] == [
        'refused WebSocket "/": Origin "https://evil.net" not allowed'
    ]


async def test_only_for_websockets() -> None:
    from headrace.testing import HttpCommunicator

    app = OriginValidator(AsyncWebsocketConsumer.as_asgi(), ["*"])
    with pytest.raises(ValueError, match="WebSocket"):
        await HttpCommunicator(app, "GET", "/").wait()


@override_settings(ALLOWED_HOSTS=["chat.example.com", ".example.org"])
async def test_allowed_hosts_validator() -> None:
    app = AllowedHostsOriginValidator(AsyncWebsocketConsumer.as_asgi())
    host = [(b"host", b"chat.example.com")]
    assert await _admitted(app, host + _headers("https://chat.example.com")) is True
    assert await _admitted(app, host + _headers("http://a.example.org:8080")) is True
    assert await _admitted(app, host + _headers("https://evil.com")) is False


@override_settings(ALLOWED_HOSTS=[], DEBUG=True)
async def test_allowed_hosts_validator_in_debug_allows_localhost() -> None:
    app = AllowedHostsOriginValidator(AsyncWebsocketConsumer.as_asgi())
    host = [(b"host", b"localhost:8000")]
    assert await _admitted(app, host + _headers("http://localhost:3000")) is True
    assert await _admitted(app, host + _headers("http://127.0.0.1:8000")) is True
    assert await _admitted(app, host + _headers("http://example.com")) is False
