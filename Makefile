# Two targets do all the set-up on a fresh machine: each creates .venv, installs gvlab, then runs.
#   make run    the project's main job: reproduce fbm/bridge (quick profile) and print its claims table
#   make test   the test suite (under 10 minutes on 2 CPU cores)
# Versions are pinned by requirements.lock (regenerate with `make lock`).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/python
	$(PIP) install -c requirements.lock -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml requirements.lock | $(BIN)/python
	$(PIP) install -c requirements.lock -e ".[test,notebooks]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/gvlab reproduce fbm/bridge --profile quick

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=30

$(VENV)/.installed-bench: pyproject.toml requirements.lock | $(BIN)/python
	$(PIP) install -c requirements.lock -e ".[bench]"
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_fit.py
	$(BIN)/python benchmarks/bench_fractional_sde.py
	$(BIN)/python benchmarks/bench_transformer.py
	$(BIN)/python benchmarks/bench_unet.py

lock: $(VENV)/.installed-test
	$(PIP) freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .cache .pytest_cache
