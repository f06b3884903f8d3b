# freshrank: `make demo` runs the whole platform on the packaged MovieLens sample; `make test` tests it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FRESHRANK_HOME ?= $(CURDIR)/.freshrank
DAGSTER_PORT ?= 3000
MLFLOW_PORT ?= 5000

.PHONY: help install demo test test-all lint format dev clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv, install freshrank with its pinned stack, parse the dbt project
	@# Bytecode for freshrank's own modules (pip compiles the installed packages but not an
	@# editable source tree): where PYTHONDONTWRITEBYTECODE is set, every command would
	@# otherwise compile them again at start-up (about a second of each CLI command here).
	@$(BIN)/python -m compileall -q orchestration ml

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	cd dbt_project && FRESHRANK_WAREHOUSE_PATH=$(FRESHRANK_HOME)/warehouse.duckdb \
		$(BIN)/dbt parse --quiet --profiles-dir .
	touch $(STAMP)

demo: install ## Run the main job end to end on the packaged MovieLens sample
	$(BIN)/freshrank demo

test: install ## Run the test suite (PostgreSQL tests run when FRESHRANK_TEST_POSTGRES_URL is set)
	$(BIN)/python -m pytest

lint: install ## Ruff (lint and format check) and sqlfluff on the dbt models
	$(BIN)/ruff check orchestration ml tests benchmarks
	$(BIN)/ruff format --check orchestration ml tests benchmarks
	cd dbt_project && $(BIN)/sqlfluff lint models macros

format: install ## Apply ruff's formatting and fixes
	$(BIN)/ruff format orchestration ml tests benchmarks
	$(BIN)/ruff check --fix orchestration ml tests benchmarks

dev: install ## Dagster UI (with daemon) and MLflow UI on 127.0.0.1
	@$(BIN)/python -m orchestration.app.dev --dagster-port $(DAGSTER_PORT) --mlflow-port $(MLFLOW_PORT)

clean: ## Remove the demo's FRESHRANK_HOME and dbt build output (keeps .venv)
	rm -rf $(FRESHRANK_HOME) dbt_project/target dbt_project/logs
