# Two entry points: `make demo` (train, serve on SQLite, simulate traffic) and `make test`.
# Both build the virtualenv first, so they work on a fresh clone with only python3 and make.
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install demo serve test lint bench clean

$(BIN)/router: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,postgres,fast,docs,skops,sign]'
	touch $@

install: $(BIN)/router

demo: install
	$(BIN)/router demo --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check router tests bench

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench.serving

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache var
