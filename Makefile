# headrace — every command a developer or CI needs. `make test` works on a machine that has
# nothing installed but a Python >= 3.12 (it creates .venv, installs the package and the
# system programs the tests need, and runs the whole suite).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The first of python3.12, python3.13, python3 that is at least 3.12.
PYTHON ?= $(shell for p in python3.12 python3.13 python3; do \
	if command -v $$p >/dev/null 2>&1 && \
	   $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
	   echo $$p; break; fi; done)

PYTEST_ARGS ?=

.PHONY: test check lint format typecheck bench demo screenshots system-deps install clean

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
# use the Redis layer with a separate worker process. Ctrl-C stops everything.
demo: install
	@DEMO_PYTHON=$(CURDIR)/$(BIN)/python demo/run.sh $(DEMO_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
		echo "headrace needs Python >= 3.12 (tried python3.12, python3.13, python3)" >&2; exit 1; fi
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# Refresh docs/img/*.png (the README's screenshots) from the browser tests.
screenshots: install system-deps
	HEADRACE_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/pytest -q tests/test_demo.py tests/test_dashboard_browser.py

# System programs the tests start themselves (never a shared, already-running server).
system-deps:
	@need=""; \
	command -v redis-server >/dev/null 2>&1 || need="$$need redis-server"; \
	[ -x /usr/bin/chromium ] || need="$$need chromium"; \
	if [ -n "$$need" ]; then \
		echo "installing:$$need"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
