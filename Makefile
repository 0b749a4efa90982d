# maskloop: the two set-up commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DVC_NO_ANALYTICS := 1
export PATH := $(BIN):$(PATH)

.PHONY: demo test install system-deps lint typecheck pytest clean-state fresh-check

## install: the project venv at .venv (skipped when pyproject.toml has not changed)
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,ray]'
	touch $(STAMP)

## demo: the main job: dvc repro on the bundled sample photos with the weight-free pre-annotator
demo: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/maskloop status

## system-deps: apt packages and the Label Studio server venv the tests need (skips what is there)
system-deps:
	bash scripts/install_system_deps.sh

lint: $(STAMP)
	$(BIN)/ruff check pipeline qa dashboards tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

## test: everything the tests need, then ruff, mypy and pytest
test: $(STAMP) system-deps lint typecheck pytest

## fresh-check: `make test` in a clean clone of HEAD with a fresh TMPDIR and fresh tool caches (run it before
## landing a change to the tests or their set-up; see scripts/fresh_check.sh)
fresh-check:
	bash scripts/fresh_check.sh

clean-state:
	rm -rf .maskloop
