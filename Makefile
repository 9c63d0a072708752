# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both first run `make setup`, which is idempotent and skipped once done.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
JARS := .jars
STAMP := $(VENV)/.larr-setup-done
LAKEHOUSE ?= ./lakehouse
PYTEST_ARGS ?=

.PHONY: setup test lint format demo bench clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml jobs/maven/pom.xml jobs/maven/resolve_jars.sh
	@echo "setup: virtualenv in $(VENV), pinned packages, Delta Lake jars (first run takes several minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	bash jobs/maven/resolve_jars.sh $(BIN)/python $(JARS)
	touch $(STAMP)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/larr generate --lakehouse $(LAKEHOUSE)

bench: setup
	$(BIN)/larr bench generate --lakehouse $(LAKEHOUSE)

clean:
	rm -rf $(LAKEHOUSE) spark-warehouse metastore_db derby.log
