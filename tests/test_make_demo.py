"""``make demo`` installs only what the demo runs on, not the test and lint toolchain."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _requirements(*extras: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "dependencies.py"), *extras],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


def test_the_demo_installs_the_package_dependencies_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _requirements() == project["dependencies"]
    with_redis = _requirements("redis")
    assert [r for r in with_redis if r.startswith("redis")] == ["redis[hiredis]>=5.2"]
    for tool in ("pytest", "ruff", "mypy", "playwright", "channels"):
        assert not any(r.startswith(tool) for r in with_redis), tool


def test_make_demo_does_not_depend_on_the_full_install() -> None:
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo: *(.*)$", makefile, re.MULTILINE)
    assert demo is not None
    assert demo.group(1).split() == ["demo-install"]
    # `make test` still installs everything.
    assert re.search(r"^test: *install\b", makefile, re.MULTILINE)
    assert '-e ".[dev]"' in makefile
    # The demo finds headrace in src/ without it being installed.
    assert 'PYTHONPATH="$here/../src' in (ROOT / "demo" / "run.sh").read_text()
