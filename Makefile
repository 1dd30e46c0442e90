# headrace — every command a developer or CI needs. `make test` works on a machine that has
# nothing installed but a Python >= 3.12 (it creates .venv, installs the package and the
# system programs the tests need, and runs the whole suite).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo's own install: the package only (plus the redis extra when REDIS_URL is set).
DEMO_STAMP := $(VENV)/.demo-installed$(if $(REDIS_URL),-redis)

# The first of python3.12, python3.13, python3 that is at least 3.12.
PYTHON ?= $(shell for p in python3.12 python3.13 python3; do \
	if command -v $$p >/dev/null 2>&1 && \
	   $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
	   echo $$p; break; fi; done)

PYTEST_ARGS ?=

.PHONY: test check lint format typecheck bench demo demo-install screenshots system-deps install clean

test: install system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

check: install system-deps
	$(BIN)/ruff check src tests bench demo
	$(BIN)/ruff format --check src tests bench demo
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench demo
	$(BIN)/ruff format --check src tests bench demo

format: install
	$(BIN)/ruff check --fix src tests bench demo
	$(BIN)/ruff format src tests bench demo

typecheck: install
	$(BIN)/mypy

bench: install system-deps
	$(BIN)/pip install -q -e ".[bench]"
	@for script in bench/*.py; do \
		case $$script in */_*) continue;; esac; \
		echo "# $$script" >&2; $(BIN)/python $$script || exit 1; \
	done

# The demo (chat, live progress, live blog) at http://127.0.0.1:8000; REDIS_URL=redis://... to
# use the Redis layer with a separate worker process. Ctrl-C stops everything. It installs only
# what the demo runs on (not the test and lint toolchain), so a fresh clone serves in seconds.
demo: demo-install
	@DEMO_PYTHON=$(CURDIR)/$(BIN)/python demo/run.sh $(DEMO_ARGS)

demo-install: $(DEMO_STAMP)

# Dependencies only (demo/dependencies.py reads them from pyproject.toml); the demo imports
# headrace from src/. When this Python has pip, the venv is made without its own copy (faster)
# and this pip installs into it; `make install` adds pip to the venv when it needs it.
$(DEMO_STAMP): pyproject.toml demo/dependencies.py
	@if [ -z "$(PYTHON)" ]; then \
		echo "headrace needs Python >= 3.12 (tried python3.12, python3.13, python3)" >&2; exit 1; fi
	@if [ ! -x $(BIN)/python ]; then \
		if $(PYTHON) -m pip --version >/dev/null 2>&1; then $(PYTHON) -m venv --without-pip $(VENV); \
		else $(PYTHON) -m venv $(VENV); fi; fi
	@if $(BIN)/python -m pip --version >/dev/null 2>&1; then pip="$(BIN)/python -m pip"; \
	else pip="$(PYTHON) -m pip --python $(BIN)/python"; fi; \
	$(BIN)/python demo/dependencies.py $(if $(REDIS_URL),redis) | xargs $$pip install -q
	@touch $@

install: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
		echo "headrace needs Python >= 3.12 (tried python3.12, python3.13, python3)" >&2; exit 1; fi
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip >/dev/null
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# Refresh docs/img/*.png (the README's screenshots) from the browser tests.
screenshots: install system-deps
	HEADRACE_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/pytest -q tests/test_demo.py

# System programs the tests start themselves (never a shared, already-running server).
system-deps:
	@need=""; \
	command -v redis-server >/dev/null 2>&1 || need="$$need redis-server"; \
	[ -x /usr/bin/chromium ] || need="$$need chromium"; \
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| need="$$need postgresql"; \
	if [ -n "$$need" ]; then \
		echo "installing:$$need"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
