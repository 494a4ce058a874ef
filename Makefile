# neuralode: `make test` and `make reproduce` each set up their own environment (.venv) on first use.
# `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help venv test test-full lint format reproduce clean-venv

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): requirements/base.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/base.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(STAMP) ## Create .venv with the pinned dependencies (re-used when up to date)

lint: venv ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv ## Apply ruff formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint ## Lint, then the fast test suite (what CI runs)
	$(PY) -m pytest -m "not slow" -q

test-full: lint ## Every test, the slow ones included
	$(PY) -m pytest -q

reproduce: venv ## Run every experiment that exists at PROFILE (quick by default) and write results/
	@echo "make reproduce: no experiment exists yet. The core package (neuralode/) is in place and"
	@echo "tested by 'make test'; MNIST, NFE statistics, CNF and latent ODE experiments are still to come."
	@echo "Nothing was run (PROFILE=$(PROFILE))."

clean-venv: ## Remove the virtual environment
	rm -rf $(VENV)
