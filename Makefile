# energylake: the make targets are the interface (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= data
# Demo size: 2 clients x 5 branches x 1 day (the brief's demo).
DEMO_ARGS ?= --clients 2 --branches 5 --days 1 --seed 42

.PHONY: help install lint typecheck unit test demo clean lock bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install energylake with its dev tools

lint: $(STAMP) ## ruff (lint and format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict on the project's packages
	$(BIN)/mypy

unit: $(STAMP) ## pytest only
	$(BIN)/pytest

test: $(STAMP) ## everything CI runs: install, lint, type checks, the whole suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/energylake contracts lint
	$(BIN)/pytest

demo: $(STAMP) ## the main job end to end on embedded defaults (./data)
	$(BIN)/energylake demo --data-dir $(DATA) $(DEMO_ARGS)

bench: $(STAMP) ## energylake process vs plain polars, then the partition time grain (docs/BENCHMARKS.md)
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.partition_grain

lock: ## refresh constraints.txt from a clean resolve
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet --upgrade pip
	.lockvenv/bin/pip install --quiet -e '.[dev]'
	.lockvenv/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .lockvenv

clean: ## remove .venv and generated data
	rm -rf $(VENV) $(DATA) .mypy_cache .ruff_cache .pytest_cache .hypothesis
