"""The seed's chat app, ported to headrace by changing import lines only, over real sockets.

A live uvicorn server runs ``tests.chatapp.asgi.application``; real ``websockets`` clients
join rooms, talk, are refused for a foreign origin, and are recognised from their Django
session cookie after logging in over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from websockets.exceptions import InvalidStatus

from headrace.testing import LiveServer
from tests.conftest_consumers import recv_json, ws_connect

pytest_plugins = ["headrace.testing.pytest_plugin"]
pytestmark = pytest.mark.slow

SEED_DIR = Path(__file__).parent / "chatapp"


def _code_lines(path: Path) -> list[str]:
    return [
        line
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("module", ["consumers.py", "routing.py"])
def test_only_import_lines_differ_from_the_seed(module: str) -> None:
    """The ported module is the seed's Channels code with only its import lines changed."""
    seed = _code_lines(SEED_DIR / "seed" / f"{module}.txt")
    ported = _code_lines(SEED_DIR / module)
    assert len(seed) == len(ported)
    changed = [(a, b) for a, b in zip(seed, ported, strict=True) if a != b]
    for original, port in changed:
        assert original.startswith(("from ", "import ")), original
        assert port == original.replace("channels", "headrace"), port


async def test_room_broadcast_between_real_clients(headrace_live_server: LiveServer) -> None:
    base = headrace_live_server.ws_url
    async with (
        ws_connect(f"{base}/ws/chat/lobby/") as alice,
        ws_connect(f"{base}/ws/chat/lobby/") as bob,
        ws_connect(f"{base}/ws/chat/lobby/") as carol,
        ws_connect(f"{base}/ws/chat/kitchen/") as dave,
    ):
        await alice.send(json.dumps({"message": "hello lobby"}))
        for client in (alice, bob, carol):
            assert await recv_json(client) == {"message": "hello lobby"}
        await dave.send(json.dumps({"message": "kitchen only"}))
        # dave's first message is his own room's: he never got the lobby's.
        assert await recv_json(dave) == {"message": "kitchen only"}
        await bob.close()
        await carol.send(json.dumps({"message": "bob left"}))
        assert await recv_json(alice) == {"message": "bob left"}
        assert await recv_json(carol) == {"message": "bob left"}


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "http://127.0.0.1.evil.example"},
        {"origin": None},
        {"origin": "auto", "additional_headers": [("Origin", "http://evil.example")]},
    ],
    ids=["foreign", "lookalike", "missing", "two-origins"],
)
async def test_foreign_origins_are_refused(
    headrace_live_server: LiveServer, headers: dict[str, object]
) -> None:
    url = f"{headrace_live_server.ws_url}/ws/chat/lobby/"
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(url, **headers):  # type: ignore[arg-type]
            pass
    # uvicorn itself answers 400 to several Origin headers; OriginValidator answers 403 to
    # the rest (and to several origins on servers that let them through: see test_security).
    assert refused.value.response.status_code in {400, 403}
    if "additional_headers" not in headers:
        assert refused.value.response.status_code == 403
    # ...and the server goes on serving well-behaved clients.
    async with ws_connect(url) as ok:
        await ok.send(json.dumps({"message": "still open"}))
        assert await recv_json(ok) == {"message": "still open"}


def _login(base: str, username: str, password: str) -> str:
    query = f"?username={username}&password={password}"
    with urllib.request.urlopen(f"{base}/login/{query}", timeout=5) as response:
        assert response.status == 200
        cookie = response.headers["Set-Cookie"]
    return str(cookie.split(";", 1)[0])


async def test_session_auth_from_a_real_login(headrace_live_server: LiveServer) -> None:
    await sync_to_async(get_user_model().objects.create_user)("ada", password="lovelace")
    ws_base = headrace_live_server.ws_url
    async with ws_connect(f"{ws_base}/ws/whoami/") as anonymous:
        assert await recv_json(anonymous) == {"authenticated": False, "username": ""}
    cookie = await asyncio.to_thread(_login, headrace_live_server.url, "ada", "lovelace")
    assert cookie.startswith("sessionid=")
    async with ws_connect(f"{ws_base}/ws/whoami/", additional_headers={"Cookie": cookie}) as ada:
        assert await recv_json(ada) == {"authenticated": True, "username": "ada"}
    # A forged session key is just anonymous.
    forged = {"Cookie": "sessionid=not-a-real-session"}
    async with ws_connect(f"{ws_base}/ws/whoami/", additional_headers=forged) as nobody:
        assert await recv_json(nobody) == {"authenticated": False, "username": ""}


BROWSER = "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


@pytest.mark.usefixtures("transactional_db")
def test_chat_and_event_stream_in_a_real_browser() -> None:
    """Two Chromium pages chat through the ported consumer; both get news over EventSource."""
    from playwright.sync_api import expect, sync_playwright

    from headrace.layers import get_channel_layer

    with LiveServer() as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=BROWSER, args=BROWSER_ARGS)
        try:
            ada = browser.new_context().new_page()
            bob = browser.new_context().new_page()
            for page in (ada, bob):
                page.goto(f"{server.url}/room/lobby/")
                expect(page.locator("body")).to_have_attribute("data-socket", "open")
                expect(page.locator("body")).to_have_attribute("data-events", "open")
            ada.fill("#text", "hello from a browser")
            ada.click("#send")
            for page in (ada, bob):
                expect(page.locator("#log li")).to_have_text(["hello from a browser"])
            layer = get_channel_layer()
            # Playwright's sync API holds this thread's event loop; send from another one.
            news = {"type": "sse.event", "event": "news", "id": 7, "data": "extra"}
            with ThreadPoolExecutor(1) as other_thread:
                other_thread.submit(asyncio.run, layer.group_send("news", news)).result(5)
            for page in (ada, bob):
                expect(page.locator("#news li")).to_have_text(["7: extra"])
        finally:
            browser.close()
