# Two entry points: `make demo` (train, serve on SQLite, simulate traffic) and `make test`.
# Both build the virtualenv first, so they work on a fresh clone with only python3 and make.
# The demo installs only the runtime; tests and development add every extra but the bench's
# (dev tools, the PostgreSQL store, the fast engine, the documentation site, skops, signing).
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_ARGS ?=
DEMO_INSTALLED := $(VENV)/.installed-demo
DEV_INSTALLED := $(VENV)/.installed-dev

.PHONY: install install-demo demo test lint docs screenshot constraints bench clean

$(BIN)/python:
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(DEMO_INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV_INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,postgres,fast,docs,skops,sign]'
	touch $@

install: $(DEV_INSTALLED)

install-demo: $(DEMO_INSTALLED)

demo: install-demo
	$(BIN)/router demo --host $(HOST) --port $(PORT) $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check router tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The README's picture, redrawn from a running demo (Debian's chromium and chromium-driver).
screenshot: install
	$(BIN)/python -m tests.e2e.browser http://$(HOST):$(PORT) docs/dashboard.png

# The image's pinned dependencies (Dockerfile): the runtime with the extras deploy/ needs,
# postgres (its store is PostgreSQL) and fast (the ONNX Runtime engine).
constraints: install
	CUSTOM_COMPILE_COMMAND="make constraints" $(BIN)/pip-compile --quiet --strip-extras \
		--extra postgres --extra fast --no-emit-index-url --no-emit-find-links \
		--output-file deploy/constraints.txt pyproject.toml

bench: install
	$(BIN)/python -m bench.serving

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache var
