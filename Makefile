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

.PHONY: help install lint typecheck unit check test demo clean lock bench proto

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# editable_mode=compat: the checkout's root goes on sys.path (a .pth), so our packages are
# found as regular packages. The default editable finder runs after the path search, and a
# process started inside a data folder (its landing/, lake/, audit/ folders on sys.path via
# the working directory) then imported those folders as namespace packages instead of ours.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' \
	  --config-settings editable_mode=compat
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install energylake with its dev tools

# Mosquitto (the integration tests and the demo start a private broker): installed with
# apt-get when missing, a no-op when present.
MOSQUITTO ?= /usr/sbin/mosquitto
.PHONY: mosquitto
mosquitto: ## install Mosquitto and its clients (and strace, for the durable-write tests) with apt-get when missing
	@if [ -x "$(MOSQUITTO)" ] && command -v strace >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "error: $(MOSQUITTO) or strace is missing and apt-get is not available:" \
	    "install Mosquitto 2.x (mosquitto, mosquitto-clients) and strace by hand" >&2; exit 1; fi; \
	sudo=""; if [ "$$(id -u)" != 0 ]; then \
	  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else \
	    echo "error: $(MOSQUITTO) or strace is missing; installing needs root (or sudo)" >&2; exit 1; fi; fi; \
	echo "installing Mosquitto and strace with apt-get"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto mosquitto-clients strace; \
	test -x "$(MOSQUITTO)" || { echo "error: apt-get ran but $(MOSQUITTO) is still missing" >&2; exit 1; }; \
	command -v strace >/dev/null 2>&1 || { echo "error: apt-get ran but strace is still missing" >&2; exit 1; }

lint: $(STAMP) ## ruff (lint and format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict on the project's packages
	$(BIN)/mypy

unit: $(STAMP) ## pytest only
	$(BIN)/pytest

# The inner loop: what `make test` checks, less the tests marked slow (each over ~1.5 s; they
# still run in `make test`). PYTEST_ARGS adds pytest options, e.g. PYTEST_ARGS="--durations=20"
# to see what the loop spends its time on, or a path to check one part.
PYTEST_ARGS ?=
check: $(STAMP) mosquitto ## the inner loop: lint, types and the fast tests (-m "not slow")
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/energylake contracts lint
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file per worker at a time
# (module fixtures built once): much of it waits on brokers, subprocesses and fsync, so three
# workers on two cores take ~10 min where one took ~18 (docs/TESTING.md). TEST_WORKERS=0
# runs it in one process.
TEST_WORKERS ?= 3
test: $(STAMP) mosquitto ## everything CI runs: install, lint, type checks, the whole suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/energylake contracts lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: $(STAMP) mosquitto ## the main job end to end on embedded defaults (./data)
	$(BIN)/energylake demo --data-dir $(DATA) $(DEMO_ARGS)

bench: $(STAMP) mosquitto ## the benchmarks, each against a baseline measured in the same run (docs/BENCHMARKS.md)
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.partition_grain
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.freshness
	$(BIN)/python -m bench.lineage_queries
	$(BIN)/python -m bench.quality_gate
	$(BIN)/python -m bench.access
	$(BIN)/python -m bench.retention
	$(BIN)/python -m bench.erasure
	$(BIN)/python -m bench.report

lock: ## refresh constraints.txt from a clean resolve
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet --upgrade pip
	.lockvenv/bin/pip install --quiet -e '.[dev]'
	.lockvenv/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .lockvenv

# The Sparkplug B schema is compiled once and the result committed (gateway/sparkplug/
# README.md): `make test` needs no protoc. grpcio-tools 1.76.0 bundles libprotoc 31.1,
# whose Python gencode (6.31.1) the runtime Beam pins accepts (protobuf 6.31.1 to <7);
# it is installed in a throwaway venv, never in .venv.
PROTOC_VENV := .protoc-venv
GRPCIO_TOOLS := grpcio-tools==1.76.0
proto: ## regenerate gateway/sparkplug/sparkplug_b_pb2.py(i) from the vendored .proto
	@test -x $(PROTOC_VENV)/bin/python || $(PYTHON) -m venv $(PROTOC_VENV)
	$(PROTOC_VENV)/bin/python -m pip install --quiet '$(GRPCIO_TOOLS)'
	cd gateway/sparkplug && ../../$(PROTOC_VENV)/bin/python -m grpc_tools.protoc -I. \
	  --python_out=. --pyi_out=. sparkplug_b.proto

clean: ## remove .venv and generated data
	rm -rf $(VENV) $(PROTOC_VENV) $(DATA) .mypy_cache .ruff_cache .pytest_cache .hypothesis
