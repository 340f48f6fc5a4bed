# CarePath: two commands for a newcomer.
#   make demo   installs what is needed, then runs a synthetic cohort through the whole journey
#   make test   installs what is needed, then runs the whole test suite (what CI runs)
#   make test-fast   the fast tier: the suite without its slow tier, for the edit-test loop

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast storm lint server-start server-stop worker console histories openapi clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python starter.py demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/python -m pytest -q

# Every test but the slow tier (real PostgreSQL, the dev server, whole journeys, the storm).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The crash storm: 50 journeys while the worker is SIGKILLed 10 times and the server restarted.
storm: $(STAMP)
	$(BIN)/python -m pytest -m storm -s --timeout 900 tests/test_storm.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# The API's OpenAPI document kept in docs/ (tests/test_api.py fails when it is stale).
openapi: $(STAMP)
	$(BIN)/python -m web.openapi

server-start: $(STAMP)
	$(BIN)/python starter.py server start

server-stop: $(STAMP)
	$(BIN)/python starter.py server stop

worker: $(STAMP)
	$(BIN)/python worker.py

# The case managers' console in the browser (sign in as the demo's staff after `make demo`).
console: $(STAMP)
	$(BIN)/python starter.py console

# make histories SCENARIOS="relapse_in_intensive" records only those paths.
histories: $(STAMP)
	$(BIN)/python -m tests.record_histories $(SCENARIOS)

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache
