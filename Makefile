# HealthFlow: the two commands a user needs are `make demo` and `make test`.
# Everything runs through uv (https://docs.astral.sh/uv/); the environment is locked in uv.lock.

SHELL := /bin/bash
UV ?= uv
RUN := $(UV) run --frozen
PYTEST_ARGS ?=

.PHONY: help venv stack stack-down demo test test-unit lint format bench settings-doc clean

help:
	@echo "make demo   - set up, start the local stack and run the pipeline on the sample data"
	@echo "make test   - run the whole test suite against a real local stack"
	@echo "make lint   - ruff and mypy"
	@echo "make bench  - benchmarks on ../shared/data; results in bench/results/"

venv:
	@command -v $(UV) >/dev/null || { echo "uv is not installed: python3 -m pip install uv"; exit 1; }
	$(UV) sync --frozen

stack: venv
	$(RUN) healthflow stack up

stack-down:
	$(RUN) healthflow stack down

# pytest exits 5 when it collects no tests; make treats that as a failure like any non-zero status.
test: stack
	$(RUN) pytest $(PYTEST_ARGS)

test-unit: venv
	$(RUN) pytest tests/unit $(PYTEST_ARGS)

demo: stack
	$(RUN) python -m healthflow.demo

lint: venv
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: venv
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench: stack
	$(RUN) python bench/run_all.py --out bench/results

settings-doc: venv
	$(RUN) python -m healthflow.settings_doc README.md README.fr.md

clean: stack-down
	rm -rf .healthflow
