# One place for the project's commands. `make demo` installs and serves the demo receptionist;
# `make check` runs lint, types and every test (what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo check lint types test test-unit pjsua2 pjsua2-pypi bench capacity

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
	$(BIN)/pytest -q --cov=engine/flow --cov=engine/rules --cov=engine/admission --cov-branch --cov-report=term --cov-fail-under=95

test-unit: install
	$(BIN)/pytest -q --ignore=tests/integration

check: lint types test

# The tuned pjsua2 (1,024 calls, epoll, IPv6; build/pjsua2/README.md) built from source and
# installed into the venv in place of the PyPI wheel. The wheel is cached
# (~/.cache/vr-engine/pjsua2), so a second run takes seconds. Source: PJSUA2_SOURCE=auto
# (default: upstream release, else Debian's ring package), upstream, ring, or
# path with PJPROJECT_SRC=/path/to/pjproject.
pjsua2: install
	PYTHON=$(abspath $(BIN)/python) bash build/pjsua2/build.sh install

# back to the PyPI wheel that pyproject.toml pins
pjsua2-pypi: install
	PYTHON=$(abspath $(BIN)/python) bash build/pjsua2/build.sh restore

# the load benchmark (bench/README.md); e.g. make bench BENCH_ARGS="--steps 50,100"
bench: install
	$(BIN)/python bench/load.py $(BENCH_ARGS)

# The tuned build's tests (tests/integration/test_capacity*.py: 50 concurrent calls, none may
# fail; IPv6 calls on ::1; hostile SIP over UDP and TCP) in a venv of its own with the tuned pjsua2, so that `make check`
# keeps testing the PyPI wheel's 4-call limit in .venv. CI: PJSUA2_SOURCE=ring make capacity.
TUNED_VENV ?= .venv-tuned
capacity:
	$(MAKE) pjsua2 VENV=$(TUNED_VENV)
	$(TUNED_VENV)/bin/pytest -q -rs -p no:cacheprovider tests/integration/test_capacity.py \
	  tests/integration/test_capacity_ipv6.py tests/integration/test_sip_hostile.py
