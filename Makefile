# Two entry points for a fresh machine (Python 3.11, no GPU):
#   make run    install everything into .venv and run the main job on the embedded default
#   make test   install everything (with test extras) into .venv and run the test suite
# torch comes from constraints/cpu.txt (the CPU wheel): a bare `torch` would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= dev
CONFIG ?= launch/configs/tiny.yaml
PYTEST_ARGS ?=

.PHONY: run test install clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the dependency declarations change (stamp per extras set).
$(VENV)/.installed-$(EXTRAS): setup.cfg pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PIP) install --upgrade --quiet pip
	$(PIP) install -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

run: install
	$(VENV)/bin/rad train --config $(CONFIG)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
