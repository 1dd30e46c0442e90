"""ProgRock settings with the embedded workers switched off (for tests/test_server.py)."""

from tests.progrock.settings import *  # noqa: F403

HEADRACE_EMBEDDED_WORKERS = False
