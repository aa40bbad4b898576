# One place for the project's commands. `make demo` installs and serves the demo receptionist;
# `make check` runs lint, types and every test (what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo check lint types test test-unit

$(BIN)/vr-engine: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/vr-engine

demo: install
	$(BIN)/vr-engine serve --demo

lint: install
	$(BIN)/ruff check engine tests bench prompts/generate
	$(BIN)/ruff format --check engine tests bench prompts/generate

types: install
	$(BIN)/mypy engine

test: install
	$(BIN)/pytest -q --cov=engine/flow --cov-branch --cov-report=term --cov-fail-under=95

test-unit: install
	$(BIN)/pytest -q --ignore=tests/integration

check: lint types test
