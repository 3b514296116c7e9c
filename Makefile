# One-command entry points. `make demo` and `make test` set everything up first (scripts/setup.sh).
.PHONY: setup demo test test-fast lint check clean

VENV := .venv
BIN := $(VENV)/bin

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/teachback run invented-domain --turns 3

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not real"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/check_packages.py imports
	$(BIN)/python scripts/check_packages.py types

check: lint test

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
