"""ProgRock over Redis: the live uvicorn server in the test process, the prog-rocker worker (and
its asgi.delay forwarding) in a separate ``runworker`` process, a real WebSocket client."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from headrace.server import Server, ServerOptions
from tests.progrock.asgi import application
from tests.progrock.processes import kill, start_command, stop
from tests.redis_servers import servers
from tests.test_progrock import expected_updates, rock_out

DELAY_MS = 20
STEP = 3


@pytest.fixture
def redis_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {
        "HEADRACE_TEST_REDIS_URL": servers(request.config).standalone().url,
        "HEADRACE_TEST_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
        "PROGROCK_DELAY_MS": str(DELAY_MS),
        "PROGROCK_STEP": str(STEP),
    }


@pytest.fixture
def redis_server_app(redis_env: dict[str, str], settings: Any) -> Iterator[Server]:
    """uvicorn serving ProgRock on the Redis layer, with no embedded workers."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "headrace.layers.redis.RedisChannelLayer",
            "CONFIG": {
                "hosts": [redis_env["HEADRACE_TEST_REDIS_URL"]],
                "prefix": redis_env["HEADRACE_TEST_REDIS_PREFIX"],
            },
        }
    }
    options = ServerOptions(port=0, log_level="warning", access_log=False, configure_logging=False)
    server = Server(application, options)
    server.start_in_thread()
    yield server
    server.stop()


@pytest.mark.slow
async def test_progrock_on_redis_with_the_worker_in_another_process(
    redis_env: dict[str, str], redis_server_app: Server
) -> None:
    worker = start_command("runworker", "prog-rocker", env=redis_env)
    try:
        took, received = await rock_out(redis_server_app.ws_url)
        assert received == expected_updates(STEP)
        assert took >= (len(received) - 1) * DELAY_MS / 1000  # never early
    finally:
        code, rest = stop(worker, signal.SIGTERM)
        kill(worker)
    assert code == 0, rest
