# Every target installs what it needs first: a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Only the folders that exist: git does not keep an empty one (bench/ before it has files).
LINT_PATHS := $(wildcard service tests migrations bench)
# Empty by default: tests start the embedded PostgreSQL under ./var/.
TEST_DATABASE_URL ?=
export TEST_DATABASE_URL

.PHONY: install run test lint typecheck pytest bench bench-sql chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: serve on 127.0.0.1:8000 (embedded PostgreSQL unless DATABASE_URL is set)
run: install
	$(BIN)/python -m service.dev

## test: lint, type-check, then the whole suite on real PostgreSQL
test: lint typecheck pytest

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest $(PYTEST_ARGS)

## bench: the service against this machine's ceiling (bench/RESULTS.md); BENCH_* env vars size it
bench: install
	$(BIN)/python -m bench.run

## bench-sql: the database's CPU and WAL per event, service functions vs the ceiling's insert
bench-sql: install
	$(BIN)/python -m bench.sql

## chaos: kill -9 a worker, restart and partition PostgreSQL, two instances, fuzzing (a few minutes)
chaos: install
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache test-artifacts
