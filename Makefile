# Two targets do all the set-up on a fresh machine: each creates .venv, installs gvlab, then runs.
#   make run           the project's main job: reproduce fbm/bridge (quick profile) and print its claims table
#   make test          the test suite (under 10 minutes on 2 CPU cores), Python 3.11 and requirements.lock
#   make test-newest   the same suite on Python 3.12 with the newest releases (requirements-py312.lock, .venv-py312)
# Versions are pinned by the two locks (regenerate with `make lock` and `make lock-newest`).

PYTHON ?= python3
VENV ?= .venv
LOCK ?= requirements.lock
# Python 3.12 for the newest set: python3.12 on PATH, else pyenv's newest 3.12.x.
PYTHON312 ?= $(shell python3.12 -c 'import sys' >/dev/null 2>&1 && echo python3.12 || \
	PYENV_VERSION=$$(pyenv versions --bare 2>/dev/null | grep '^3\.12' | tail -1) pyenv which python3.12 2>/dev/null)
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test test-newest bench lock lock-newest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) install -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) install -c $(LOCK) -e ".[test,notebooks]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/gvlab reproduce fbm/bridge --profile quick

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=30

$(VENV)/.installed-bench: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) install -c $(LOCK) -e ".[bench]"
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_fit.py
	$(BIN)/python benchmarks/bench_fractional_sde.py
	$(BIN)/python benchmarks/bench_transformer.py
	$(BIN)/python benchmarks/bench_unet.py

test-newest:
	@test -n "$(PYTHON312)" || { echo "make test-newest needs Python 3.12 (python3.12 or pyenv)"; exit 1; }
	$(MAKE) test PYTHON=$(PYTHON312) VENV=.venv-py312 LOCK=requirements-py312.lock

lock: $(VENV)/.installed-test
	$(PIP) freeze --exclude-editable | grep -v '^-e' > $(LOCK)

# The newest releases the bounds in pyproject.toml admit, on Python 3.12, frozen into requirements-py312.lock.
lock-newest:
	rm -rf .venv-py312-lock && $(PYTHON312) -m venv .venv-py312-lock
	.venv-py312-lock/bin/python -m pip --disable-pip-version-check -q install -U -e ".[test,notebooks]"
	.venv-py312-lock/bin/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements-py312.lock
	rm -rf .venv-py312-lock

clean:
	rm -rf $(VENV) .venv-py312 .cache .pytest_cache
